"""One recipient's message of a campaign: the campaign's content (or each of its A/B test variants') compiled
once per batch run, then rendered with the recipient's data, tracked links, the open pixel and the unsubscribe
headers; and whom a test send is personalised as."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.content import ContentFormat, Template
from emailkit.db.tables.sending import Campaign, CampaignVariant
from emailkit.db.tables.tenancy import Workspace
from emailkit.domain.content.rendering import (
    CLICK_CALL,
    PIXEL_CALL,
    CompiledContent,
    TrackedTemplate,
    campaign_vars,
    compile_content,
    template_context,
)
from emailkit.domain.content.rendering.view_link import mentions_web_view
from emailkit.domain.content.tracked_urls import TrackingUrls, add_open_pixel, rewrite_links
from emailkit.domain.errors import ErrorCode, NotFound
from emailkit.domain.ports.provider import DELIVERY_TAG, PERSONAL_HTML, Address, OutgoingMessage
from emailkit.domain.ports.webhooks import META_CAMPAIGN, META_SUBSCRIBER
from emailkit.domain.sending.ab.content import content_of
from emailkit.domain.sending.ledger import Pending
from emailkit.domain.verp import ReturnPaths, envelope_sender

# What autoescaping changes (markupsafe.escape's characters).
_HTML_SPECIAL = re.compile(r"[&<>'\"]")
# Who a test email is personalised for when its address is nobody's and no subscriber was chosen.
SAMPLE_NAME = "Sam Sample"
SAMPLE_ATTRIBUTES: dict[str, Any] = {}


@dataclass
class Compiled:
    """What every message of a campaign shares."""

    updated_at: datetime
    content: CompiledContent
    campaign: dict[str, Any]
    from_: Address
    reply_to: Address | None
    track_opens: bool
    track_clicks: bool
    list_id_header: str
    tracked: TrackedTemplate
    # The content uses webview_url (or has the "View in browser" line): only then is it signed per message.
    web_view: bool = False
    # Where its links point: the workspace's public URL, else the instance's (None: the builder's own).
    urls: TrackingUrls | None = None
    # Whose mail it is (its From domain's DKIM key is the workspace's).
    workspace_id: int | None = None


@dataclass(frozen=True)
class MessageSpec:
    """What a message is made of before it is compiled: a campaign's settings, or a flow SEND step's."""

    workspace_id: int
    updated_at: datetime
    subject: str
    from_email: str
    from_name: str
    reply_to: str | None
    template_id: int | None
    body: str | None
    format: ContentFormat | None
    plain_text: str | None
    track_opens: bool
    track_clicks: bool
    web_view_link: bool
    # The List-Id: its display name and the label before the instance's host ("campaign-12").
    list_id: tuple[str, str]
    # What templates see as `campaign`.
    variables: dict[str, Any]


class MessageBuilder:
    def __init__(
        self,
        urls: TrackingUrls,
        *,
        unsubscribe_mailto: str | None = None,
        return_paths: ReturnPaths | None = None,
    ) -> None:
        self.urls = urls
        self.unsubscribe_mailto = unsubscribe_mailto
        # With a bounce domain: the VERP envelope sender, and a mailto: the bounce server acts on.
        self.return_paths = return_paths
        self._host = urlsplit(urls.base).hostname or "localhost"

    async def compile(
        self,
        session: AsyncSession,
        campaign: Campaign,
        variant: CampaignVariant | None = None,
        *,
        web_page: bool = False,
    ) -> Compiled:
        """What every message shares: the campaign's content, or what one of its A/B test variants sends (the
        campaign's where the variant changes nothing), with the same tracking and headers. ``web_page``: as
        the web view shows it, which is the message minus the open pixel (viewing the page is not an open)
        and minus its own "View in browser" line."""
        subject, from_name, plain_text = campaign.subject, campaign.from_name, campaign.plain_text
        template_id, body, fmt = campaign.template_id, campaign.body, campaign.format
        if variant is not None:
            own = content_of(campaign, variant)
            subject, from_name, plain_text = own.subject, own.from_name, own.plain_text
            template_id, body, fmt = own.template_id, own.body, own.format
        spec = MessageSpec(
            workspace_id=campaign.workspace_id,
            updated_at=campaign.updated_at,
            subject=subject,
            from_email=campaign.from_email,
            from_name=from_name or "",
            reply_to=campaign.reply_to,
            template_id=template_id,
            body=body,
            format=fmt,
            plain_text=plain_text,
            track_opens=campaign.track_opens,
            track_clicks=campaign.track_clicks,
            web_view_link=campaign.web_view_link,
            list_id=(campaign.name, f"campaign-{campaign.id}"),
            variables={**campaign_vars(campaign), "subject": subject, "from_name": from_name},
        )
        return await self.compile_spec(session, spec, web_page=web_page)

    async def compile_spec(
        self, session: AsyncSession, spec: MessageSpec, *, web_page: bool = False
    ) -> Compiled:
        """What every message of `spec` shares (a campaign's, or a flow's SEND step's)."""
        body, fmt, subject = spec.body, spec.format, spec.subject
        # Rebuilt every run (compile_content keeps its own cache by content), so an edited template is used.
        if spec.template_id is not None:
            tpl = await session.get(Template, spec.template_id)
            if tpl is not None:
                body, fmt = tpl.body, tpl.format
                subject = subject or tpl.subject or ""
        view_link = spec.web_view_link and not web_page
        content = compile_content(
            body or "",
            fmt or ContentFormat.HTML,
            subject=subject,
            plain_text=spec.plain_text,
            view_link=view_link,
        )
        track_opens = spec.track_opens and not web_page
        label, local = spec.list_id
        return Compiled(
            updated_at=spec.updated_at,
            content=content,
            campaign={**spec.variables, "subject": subject},
            from_=Address(spec.from_email, spec.from_name),
            reply_to=Address(spec.reply_to) if spec.reply_to else None,
            track_opens=track_opens,
            track_clicks=spec.track_clicks,
            list_id_header=f'"{_header_safe(label)}" <{local}.{self._host}>',
            tracked=content.tracked(clicks=spec.track_clicks, opens=track_opens),
            web_view=view_link or mentions_web_view(body, subject, spec.plain_text),
            urls=await self._urls_of(session, spec.workspace_id),
            workspace_id=spec.workspace_id,
        )

    async def _urls_of(self, session: AsyncSession, workspace_id: int) -> TrackingUrls | None:
        """The links of a workspace with a public URL of its own point there (its domain must reach this
        instance); the others keep the instance's. A read per compile, answered by the session's identity map
        for the variants compiled after the first."""
        workspace = await session.get(Workspace, workspace_id)
        base = None if workspace is None else workspace.public_url
        if not base or base.rstrip("/") == self.urls.base:
            return None
        return TrackingUrls(base, self.urls.signer)

    def build(self, c: Compiled, p: Pending, *, test: bool = False) -> OutgoingMessage:
        """One recipient's message. Test sends carry no tracking and a marked subject, and touch no ledger."""
        did_str = f"test-{secrets.token_hex(8)}" if test else str(p.delivery_id)
        links_of = c.urls or self.urls
        unsubscribe = f"{links_of.base}/u/test" if test else links_of.unsubscribe(p.delivery_id)
        webview = self._web_view_url(c, p, test)
        personal = _personal_values(p, unsubscribe, webview)
        tracking: dict[str, Any] = {}
        tracked = None if test else c.tracked
        if tracked is not None and tracked.render is not None:
            did, links, urls = p.delivery_id, tracked.links, links_of

            def click(i: int) -> str:
                url = urls.click(did, links[i])
                personal[f"click:{i}"] = url
                return url

            def pixel() -> str:
                url = urls.open_pixel(did)
                personal["open"] = url
                return url

            tracking[CLICK_CALL] = click
            tracking[PIXEL_CALL] = pixel
        rendered = c.content.render(
            template_context(
                subscriber={
                    "id": p.subscriber_id,
                    "email": p.email,
                    "name": p.name,
                    "attributes": p.attributes,
                    "status": "ENABLED",
                },
                campaign=c.campaign,
                unsubscribe_url=unsubscribe,
                webview_url=webview,
                **(p.context or {}),
                **tracking,
            ),
            tracked=tracked,
        )
        html = rendered.html
        if html is not None and tracked is not None:
            # What could not be compiled into the template is rewritten per message.
            if c.track_clicks and not tracked.clicks:
                did = p.delivery_id

                def rewrite(url: str) -> str:
                    tracked_url = links_of.click(did, url)
                    personal[f"click:{url}"] = tracked_url
                    return tracked_url

                html = rewrite_links(html, rewrite, skip=frozenset({unsubscribe, webview or ""}))
            if c.track_opens and not tracked.pixel:
                personal["open"] = links_of.open_pixel(p.delivery_id)
                html = add_open_pixel(html, personal["open"])
        list_unsubscribe = f"<{unsubscribe}>"
        if self.return_paths is not None:
            if not test:
                mailto = self.return_paths.unsubscribe(p.delivery_id)
                list_unsubscribe += f", <mailto:{mailto}?subject=unsubscribe>"
        elif self.unsubscribe_mailto:
            subject = quote(f"unsubscribe {did_str}")
            list_unsubscribe += f", <mailto:{self.unsubscribe_mailto}?subject={subject}>"
        return OutgoingMessage(
            delivery_id=did_str,
            sender=envelope_sender(self.return_paths, did_str, c.from_.email),
            to=Address(p.email, p.name),
            from_=c.from_,
            reply_to=c.reply_to,
            subject=f"[Test] {rendered.subject}" if test else rendered.subject,
            html=html,
            text=rendered.text,
            headers={
                "List-Unsubscribe": list_unsubscribe,
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "List-Id": c.list_id_header,
                "Precedence": "bulk",
            },
            tags={
                DELIVERY_TAG: did_str,
                META_CAMPAIGN: str(c.campaign["id"]),
                META_SUBSCRIBER: str(p.subscriber_id or ""),
            },
            workspace_id=c.workspace_id,
            personal=personal,
        )

    def _web_view_url(self, c: Compiled, p: Pending, test: bool) -> str | None:
        if not c.web_view:
            return None
        links_of = c.urls or self.urls
        return f"{links_of.base}/v/test" if test else links_of.web_view(p.delivery_id)


async def test_recipients(
    session: AsyncSession, emails: Sequence[str], as_subscriber: int | None
) -> list[Pending]:
    """Whom each test email is personalised as: `as_subscriber` when given, else the subscriber with that
    address, else a sample subscriber (so personalisation shows)."""
    chosen = None
    if as_subscriber is not None:
        chosen = await session.get(Subscriber, as_subscriber)
        if chosen is None:
            raise NotFound("Subscriber", field="subscriberId", code=ErrorCode.SUBSCRIBER_NOT_FOUND)
    known = {
        row.email: row
        for row in (await session.execute(select(Subscriber).where(Subscriber.email.in_(emails)))).scalars()
    }
    recipients = []
    for email in emails:
        sub = chosen or known.get(email)
        if sub is None:
            recipients.append(Pending(0, None, email, SAMPLE_NAME, dict(SAMPLE_ATTRIBUTES), 0))
        else:
            recipients.append(Pending(0, sub.id, email, sub.name, dict(sub.attributes or {}), 0))
    return recipients


def _personal_values(p: Pending, unsubscribe: str, webview: str | None) -> dict[str, str]:
    """What of this person a template can show as it is: the values a batching provider looks for in the
    rendered content (see ``OutgoingMessage.personal``). Tracked links are added as they are signed. Values
    are also given HTML-escaped, as autoescaping shows them in the HTML part, where that differs."""
    values = {"unsubscribe": unsubscribe, "email": p.email, "name": p.name or ""}
    if webview:
        values["webview"] = webview
    for key, value in (p.attributes or {}).items():
        if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
            values[f"attr:{key}"] = str(value)
    for name, value in list(values.items()):
        if _HTML_SPECIAL.search(value):
            values[name + PERSONAL_HTML] = str(escape(value))
    return {name: value for name, value in values.items() if value}


def _header_safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:100]
