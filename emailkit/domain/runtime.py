"""What the use cases need from the outside world, assembled once by a composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from emailkit.db.engine import Database
from emailkit.domain.apikeys import PrincipalCache
from emailkit.domain.audience.optin import OptinSender, sender_of
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.automation.live import publish_flow_stats
from emailkit.domain.automation.runner import FlowRunner
from emailkit.domain.automation.send_step import StepSender
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.counting import DEFAULT_EXACT_LIMIT
from emailkit.domain.ports.provider import EmailProvider
from emailkit.domain.ports.queue import JobQueue, PubSub
from emailkit.domain.ports.ratelimit import RateLimiter
from emailkit.domain.ports.senders import LimiterFactory, ProviderFactory, SenderMailboxCheck
from emailkit.domain.public_site import SiteCache
from emailkit.domain.senders.routing import SenderProviders, SenderRoute
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.sending.progress import ProgressReporter
from emailkit.domain.sending_domains.config import DomainConfig
from emailkit.domain.sending_domains.keyring import SendingDomainKeyring
from emailkit.domain.throttle import CoalescingPublisher
from emailkit.domain.tokens import TokenSigner
from emailkit.domain.webhooks_out.delivery import WebhookPoster, WebhookSetup


@dataclass
class SendingSetup:
    """How this process sends mail; the provider is built lazily, on the event loop that will use it."""

    provider_name: str
    provider_factory: Callable[[], EmailProvider]
    limiter_factory: Callable[[], RateLimiter | None] = lambda: None
    config: SendingConfig = field(default_factory=SendingConfig)
    # (address, display name) of transactional mail when the caller names no sender.
    default_from: tuple[str | None, str] = (None, "")
    # The rate limiters of the workspaces' senders, shared by all workers (None: senders' own rates apply
    # to nothing); their providers are built by the runtime's sender_factory.
    sender_limiter: LimiterFactory | None = None
    # What the default sender shows in the API (its type is provider_name's).
    default_rate_per_second: float | None = None
    _provider: EmailProvider | None = field(default=None, repr=False)
    _limiter: RateLimiter | None = field(default=None, repr=False)
    _limiter_built: bool = field(default=False, repr=False)
    # The process's sender, built by campaign_sender on first use (like the provider).
    cached_sender: CampaignSender | None = field(default=None, repr=False)
    # The providers of named senders, built by sender_providers on first use.
    cached_senders: SenderProviders | None = field(default=None, repr=False)

    @property
    def provider(self) -> EmailProvider:
        if self._provider is None:
            self._provider = self.provider_factory()
        return self._provider

    @property
    def limiter(self) -> RateLimiter | None:
        if not self._limiter_built:
            self._limiter = self.limiter_factory()
            self._limiter_built = True
        return self._limiter

    def default_route(self) -> SenderRoute:
        return SenderRoute(None, self.provider_name, self.provider, self.limiter)

    async def close(self) -> None:
        if self.cached_senders is not None:
            senders, self.cached_senders = self.cached_senders, None
            await senders.close()
        if self._provider is not None:
            provider, self._provider = self._provider, None
            await provider.close()


@dataclass
class Runtime:
    db: Database
    secret_key: str
    public_url: str
    max_page_size: int = 250
    # A connection's totalCount is exact up to this many matches (see emailkit.domain.counting).
    exact_count_limit: int = DEFAULT_EXACT_LIMIT
    debug: bool = False
    # Background work; None where nothing may be enqueued (e.g. tests of the API alone).
    jobs: JobQueue | None = None
    # Live updates. `live` throttles publishing per channel; it defaults to one over `pubsub`, per runtime
    # because it schedules its flushes on the runtime's event loop.
    pubsub: PubSub | None = None
    live: CoalescingPublisher | None = None
    # Sending; None in processes that never send (and in API-only tests).
    sending: SendingSetup | None = None
    # Builds a provider from a sender's row (emailkit.providers.senders): to check one on write, to probe it,
    # and to send through it. None: senders can be neither created nor used by this process.
    sender_factory: ProviderFactory | None = None
    # Checks and tries senders' bounce mailboxes (emailkit.inbound.sender_mailboxes). None: a sender naming
    # one is refused.
    sender_mailboxes: SenderMailboxCheck | None = None
    # Senders may name loopback and private hosts (EMAILKIT_SENDER_ALLOW_PRIVATE).
    sender_allow_private: bool = False
    # API keys verified recently (the HTTP API's authentication); emptied by a revocation in this process.
    principals: PrincipalCache = field(default_factory=PrincipalCache)
    # Outgoing webhooks: the SSRF rule's setting and, in processes that deliver, the HTTP client.
    webhooks: WebhookSetup = field(default_factory=WebhookSetup)
    # How flows run (automation), and the process's runner, built on first use by flow_runner.
    flows: FlowConfig = field(default_factory=FlowConfig)
    cached_flow_runner: FlowRunner | None = field(default=None, repr=False)
    # Sending domains: how they are checked, whether From domains must be verified.
    domains: DomainConfig = field(default_factory=DomainConfig)
    # The DKIM keys of the workspaces' verified sending domains, as this process's providers sign with them.
    keyring: SendingDomainKeyring | None = None
    # Workspaces' public URLs and branding read recently; updateWorkspace in this process forgets its entry.
    sites: SiteCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sites = SiteCache(self.public_url)
        if self.keyring is None:
            self.keyring = SendingDomainKeyring(self.db, self.secret_key)
        if self.live is None and self.pubsub is not None:
            self.live = CoalescingPublisher(self.pubsub)


def sender_providers(runtime: Runtime) -> SenderProviders:
    """The process-wide routes to the workspaces' senders (each sender's provider is reused)."""
    setup = runtime.sending
    if setup is None:
        raise RuntimeError("this process was not configured to send mail")
    if setup.cached_senders is None:
        setup.cached_senders = SenderProviders(
            runtime.db,
            runtime.secret_key,
            default=setup.default_route,
            build=runtime.sender_factory,
            limiter_for=setup.sender_limiter,
        )
    return setup.cached_senders


def campaign_sender(runtime: Runtime) -> CampaignSender:
    """The process-wide sender of a runtime (provider connections and the ledger's are reused)."""
    setup = runtime.sending
    if setup is None:
        raise RuntimeError("this process was not configured to send mail")
    if setup.cached_sender is None:
        setup.cached_sender = CampaignSender(
            runtime.db,
            setup.provider,
            setup.provider_name,
            TrackingUrls(runtime.public_url, TokenSigner(runtime.secret_key)),
            limiter=setup.limiter,
            progress=ProgressReporter(runtime.live) if runtime.live is not None else None,
            config=setup.config,
            senders=sender_providers(runtime),
        )
    return setup.cached_sender


def flow_runner(runtime: Runtime, poster: Callable[[], WebhookPoster]) -> FlowRunner:
    """The process-wide runner of flows (it sends through the campaign sender's provider and builder)."""
    if runtime.cached_flow_runner is None:
        sender = None
        if runtime.sending is not None:
            campaigns = campaign_sender(runtime)
            sender = StepSender(
                runtime.db,
                campaigns.provider,
                campaigns.provider_name,
                campaigns.messages,
                limiter=campaigns.limiter,
                sending=campaigns.config,
                senders=campaigns.senders,
            )
        live = runtime.live

        async def publish(flow_ids: set[int]) -> None:
            await publish_flow_stats(live, flow_ids)

        runtime.cached_flow_runner = FlowRunner(
            runtime.db,
            secret_key=runtime.secret_key,
            config=runtime.flows,
            sender=sender,
            poster=poster,
            on_counters=publish,
        )
    return runtime.cached_flow_runner


def optin_sender(runtime: Runtime) -> OptinSender:
    default_from = runtime.sending.default_from if runtime.sending is not None else (None, "")
    return sender_of(runtime.public_url, runtime.secret_key, default_from, runtime.sites)
