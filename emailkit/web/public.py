"""Public, unauthenticated pages: the website subscribe form endpoint and double opt-in confirmation.

Their pages show the branding of the workspace of the lists they name (:mod:`emailkit.domain.public_site`),
read with the lists' workspace; refusals name no workspace (a stranger learns nothing about private lists),
and a bot caught by the honeypot gets the page a real signup gets.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from emailkit import globalid
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import MailingList, Subscriber
from emailkit.db.tables.tenancy import Workspace
from emailkit.domain.audience import optin
from emailkit.domain.public_site import PublicSite, site_of
from emailkit.domain.runtime import Runtime, optin_sender
from emailkit.domain.sending import dispatch
from emailkit.domain.sending.dispatch import Dispatched
from emailkit.domain.sending.jobs import Jobs
from emailkit.domain.tokens import TokenSigner
from emailkit.domain.transactions import ConcurrentChange
from emailkit.settings import Settings
from emailkit.web.ratelimit import limits_storage

log = logging.getLogger(__name__)

# Bots fill every field; people never see this one.
HONEYPOT = "website"
_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}
_TITLES = {
    "confirm": "Confirm your subscription",
    "confirmed": "Subscription confirmed",
    "subscribed": "Almost done",
    "invalid": "Link not valid",
}


def _ids(value: Any) -> list[int]:
    """List ids from a form (repeated `lists` fields or comma-separated) or JSON (array); global or numeric."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    out = []
    for item in items:
        text = str(item).strip()
        pk = int(text) if globalid.is_pk(text) else globalid.pk_of(text, "MailingList")
        if pk is None:
            raise ValueError(f"not a list id: {item!r}")
        out.append(pk)
    return out


class PublicPages:
    def __init__(self, runtime: Runtime, limiter_storage: Storage, limits: list[RateLimitItem]) -> None:
        self.runtime = runtime
        self.signer = TokenSigner(runtime.secret_key)
        self.limiter = MovingWindowRateLimiter(limiter_storage)
        self.limits = limits
        env = Environment(
            loader=PackageLoader("emailkit.web", "templates"), autoescape=select_autoescape(default=True)
        )
        self.template = env.get_template("public.html")

    def _page(
        self, site: PublicSite | None, state: str, lists: list[str] | None = None, status: int = 200
    ) -> HTMLResponse:
        html = self.template.render(
            site=site, private=True, state=state, title=_TITLES[state], lists=lists or []
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def _site(self, workspace: Workspace) -> PublicSite:
        return site_of(workspace, self.runtime.public_url)

    async def confirm(self, request: Request) -> Response:
        parsed = optin.parse_confirm_token(self.signer, request.path_params["token"])
        if parsed is None:
            return self._page(None, "invalid", status=404)
        subscriber_id, list_ids = parsed
        # No key names the workspace: the signed lists do (an archived workspace's link is no longer valid).
        workspace = await optin.workspace_of_lists(self.runtime.db, list_ids)
        if workspace is None:
            return self._page(None, "invalid", status=404)
        with workspace_scope(workspace.id):
            return await self._confirm(request, self._site(workspace), subscriber_id, list_ids)

    async def _confirm(
        self, request: Request, site: PublicSite, subscriber_id: int, list_ids: list[int]
    ) -> Response:
        async with self.runtime.db.transaction() as session:
            if await session.get(Subscriber, subscriber_id) is None:
                # The signed subscriber is not of the lists' workspace (or is gone): as invalid as a link naming
                # missing lists, and answered the same way, without the workspace's frame.
                return self._page(None, "invalid", status=404)
            names = list(
                (
                    await session.execute(
                        select(MailingList.name).where(MailingList.id.in_(list_ids)).order_by(MailingList.id)
                    )
                ).scalars()
            )
            if not names:
                return self._page(site, "invalid", status=404)
            if request.method == "POST":
                await optin.confirm(session, subscriber_id, list_ids)
                return self._page(site, "confirmed", names)
        return self._page(site, "confirm", names)

    async def _allowed(self, request: Request) -> bool:
        # The client behind trusted proxies (emailkit.web.proxy rewrote the scope's client).
        ip = request.client.host if request.client is not None else "unknown"
        for item in self.limits:
            if not await self.limiter.hit(item, "subscribe", ip):
                return False
        return True

    async def subscribe(self, request: Request) -> Response:
        wants_json = "application/json" in request.headers.get("content-type", "")
        if not await self._allowed(request):
            return self._answer(wants_json, 429, "Too many requests; try again later")
        # Bounded by emailkit.web.bodylimit: reading past 16 KiB fails, and the answer is its 413.
        body = await request.body()
        try:
            if wants_json:
                data: dict[str, Any] = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                raw_lists = data.get("lists", data.get("listIds"))
            else:
                form = await request.form()
                data = {k: form.get(k) for k in form.keys()}
                raw_lists = form.getlist("lists") or form.getlist("listIds")
                if len(raw_lists) == 1:
                    raw_lists = raw_lists[0]
            list_ids = _ids(raw_lists)
        except (ValueError, TypeError) as exc:
            return self._answer(wants_json, 400, str(exc) or "Malformed request")
        if str(data.get(HONEYPOT) or "").strip():
            # Same answer as a real signup, in the same branding: a bot learns nothing from the response.
            return self._answer(wants_json, 200, None, await self._honeypot_site(wants_json, list_ids))
        try:
            signup = optin.signup_of(
                email=str(data.get("email") or ""), name=str(data.get("name") or ""), list_ids=list_ids
            )
            # The form carries no key: its lists name the workspace. Lists of several workspaces, or of an
            # archived one, are refused like unknown lists, never subscribed in part.
            workspace = await optin.workspace_of_lists(self.runtime.db, signup.list_ids)
            if workspace is None:
                raise optin.SubscribeRefused(optin.NOT_PUBLIC)
            site = self._site(workspace)
            with workspace_scope(workspace.id):
                dispatched = await self._signup(signup, site)
        except optin.SubscribeRefused as exc:
            return self._answer(wants_json, 400, str(exc))
        except ConcurrentChange as exc:
            return self._answer(wants_json, 409, str(exc))
        if dispatched.queue_error is not None:
            # The signup is saved but its confirmation mail could not be queued: asking again is safe.
            log.warning("subscribe: confirmation not queued: %s", dispatched.queue_error)
            response = self._answer(wants_json, 503, "Please try again in a minute")
            response.headers["Retry-After"] = "60"
            return response
        return self._answer(wants_json, 200, None, site)

    async def _honeypot_site(self, wants_json: bool, list_ids: list[int]) -> PublicSite | None:
        """The branding a real signup to these lists would show; none for lists the form would refuse (else a
        filled honeypot would tell a stranger which workspace a private list belongs to)."""
        if wants_json or not 1 <= len(set(list_ids)) <= optin.MAX_SIGNUP_LISTS:
            return None
        workspace = await optin.workspace_of_lists(self.runtime.db, list_ids, all_public=True)
        return None if workspace is None else self._site(workspace)

    async def _signup(self, signup: optin.Signup, site: PublicSite) -> Dispatched[None]:
        # The confirmation link under the workspace's public URL, from the row just read.
        sender = optin_sender(self.runtime).at(site.base_url)

        async def work(session: AsyncSession) -> tuple[None, Jobs]:
            confirmations = await optin.public_subscribe(session, sender, signup)
            return None, Jobs(transactional_ids=confirmations)

        return await dispatch.commit_then_enqueue(self.runtime, work)

    def _answer(
        self, wants_json: bool, status: int, error: str | None, site: PublicSite | None = None
    ) -> Response:
        if wants_json:
            payload = {"ok": True} if error is None else {"ok": False, "error": error}
            return JSONResponse(payload, status_code=status, headers=_HEADERS)
        if error is None:
            return self._page(site, "subscribed")
        return HTMLResponse(f"<p>{html.escape(error)}</p>", status_code=status, headers=_HEADERS)


def public_routes(settings: Settings, runtime: Runtime) -> list[Route]:
    pages = PublicPages(runtime, limits_storage(settings), parse_many(settings.subscribe_rate_limit))
    return [
        Route("/confirm/{token}", pages.confirm, methods=["GET", "POST"]),
        Route("/subscribe", pages.subscribe, methods=["POST"]),
    ]
