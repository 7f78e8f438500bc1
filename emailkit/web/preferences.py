"""``/u/<token>``: the unsubscribe link of every campaign mail, and the preference centre behind it.

The signed token names one delivery and is the only credential: whoever holds the mail holds the link.

* ``GET`` (and ``HEAD``) never changes anything: link scanners and mail clients prefetch every URL in a mail.
  It shows whose preferences these are (the address masked), a button to unsubscribe, the PUBLIC lists with
  their status, and forms to join or leave them, unsubscribe from everything, download one's data or erase it.
* ``POST`` with the body ``List-Unsubscribe=One-Click`` (RFC 8058: what mailbox providers send, and what the
  page's own Unsubscribe button sends) unsubscribes from every list through which that mail reached the person.
* Every other ``POST`` names an ``action`` and carries ``nonce``, a MAC of the delivery under a purpose of its
  own. It adds nothing an attacker holding the link could not read from the page, but it ties each form to the
  page it came from and keeps a body meant for one purpose from being taken for another. Anything else is
  refused with 400 and changes nothing.
* Erasure takes two POSTs: the first shows what will be lost, the second (``confirm=yes``) erases.

Every page shows the branding of the mail's workspace (:mod:`emailkit.domain.public_site`), read with the
delivery's workspace; a link that names no delivery of an active workspace gets the plain frame.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from emailkit import globalid
from emailkit.db.scope import workspace_scope
from emailkit.domain.audience import gdpr
from emailkit.domain.audience.preferences import centre
from emailkit.domain.content.tracked_urls import PURPOSE_UNSUBSCRIBE
from emailkit.domain.errors import DomainError, NotFound
from emailkit.domain.feedback.hits import unsubscribe_delivery
from emailkit.domain.public_site import PublicSite, site_of
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.masking import mask_email

# The forms carry a few short fields; RFC 8058 bodies are 26 bytes.
MAX_FORM_BYTES = 4096
MAX_USER_AGENT = 512
PURPOSE_FORM = "uf"
ONE_CLICK = ("List-Unsubscribe", "One-Click")
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # The page's URL is the credential: never leak it, never frame the buttons, load nothing from elsewhere
    # (but the workspace's logo, see page_headers).
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
}
# A host name as it may stand in a CSP source (anything else would let a logo URL add directives).
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?")
_TITLES = {
    "centre": "Your email preferences",
    "erase": "Erase your data?",
    "erased": "Your data is erased",
    "gone": "Nothing left here",
    "invalid": "Link not valid",
    "refused": "Request not understood",
    "too-large": "Request too large",
}


def page_headers(site: PublicSite | None) -> dict[str, str]:
    """PAGE_HEADERS, with images allowed from the workspace's logo's origin alone when it has a logo."""
    if site is None or site.logo_url is None:
        return PAGE_HEADERS
    host = urlsplit(site.logo_url).netloc.lower()
    if not _HOST.fullmatch(host):
        return PAGE_HEADERS
    return {**PAGE_HEADERS, "Content-Security-Policy": f"{CSP}; img-src https://{host}"}


@dataclass(frozen=True, slots=True)
class _Visit:
    """One request through a valid link: its delivery and the workspace's site the pages show."""

    delivery_id: int
    site: PublicSite


async def _bounded_form(request: Request) -> tuple[bytes, FormData] | None:
    """The POSTed body and its form fields, or None when the body is larger than MAX_FORM_BYTES (read no
    further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return bytes(body), await Request(request.scope, replay).form(max_files=0, max_fields=16)


class PreferenceCentre:
    def __init__(self, runtime: Runtime, signer: TokenSigner, *, anonymous: bool) -> None:
        self.runtime = runtime
        self.signer = signer
        self.anonymous = anonymous
        env = Environment(
            loader=PackageLoader("emailkit.web", "templates"),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
        )
        self.template = env.get_template("preferences.html")

    # -- rendering ------------------------------------------------------------------------------------------

    def _page(self, site: PublicSite | None, state: str, status: int = 200, **values: Any) -> HTMLResponse:
        email = values.pop("email", "")
        body = self.template.render(
            site=site,
            private=True,
            state=state,
            title=_TITLES[state],
            email=mask_email(email) if email else "",
            **values,
        )
        return HTMLResponse(body, status_code=status, headers=page_headers(site))

    def nonce(self, delivery_id: int) -> str:
        return self.signer.sign(PURPOSE_FORM, delivery_id)

    def _nonce_ok(self, delivery_id: int, given: object) -> bool:
        return isinstance(given, str) and self.signer.verify(PURPOSE_FORM, given) == [str(delivery_id)]

    async def _centre(
        self, visit: _Visit, notice: str | None = None, *, status: int = 200, problem: bool = False
    ) -> HTMLResponse:
        delivery_id = visit.delivery_id
        async with self.runtime.db.session() as session:
            recipient = await centre.recipient_of(session, delivery_id)
            if recipient is None:
                return self._page(visit.site, "invalid", status=404)
            email, subscriber_id = recipient
            prefs = (
                None
                if subscriber_id is None
                else await centre.preferences_of(session, delivery_id, subscriber_id)
            )
        if prefs is None:
            return self._page(visit.site, "gone", notice=notice)
        return self._page(
            visit.site,
            "centre",
            status=status,
            # The address the mail went to, which the reader recognises (the subscriber's may have changed).
            email=email,
            notice=notice,
            problem=problem,
            prefs=prefs,
            nonce=self.nonce(delivery_id),
        )

    # -- the route ------------------------------------------------------------------------------------------

    def _delivery_id(self, request: Request) -> int | None:
        parts = self.signer.verify(PURPOSE_UNSUBSCRIBE, request.path_params["token"])
        if parts is None or len(parts) != 1 or not (parts[0].isascii() and parts[0].isdigit()):
            return None
        return int(parts[0])

    async def handle(self, request: Request) -> Response:
        delivery_id = self._delivery_id(request)
        if delivery_id is None:
            return self._page(None, "invalid", status=404)
        # The link is the only credential, and its delivery names the workspace everything here acts in.
        workspace = await centre.workspace_of_delivery(self.runtime.db, delivery_id)
        if workspace is None:
            return self._page(None, "invalid", status=404)
        visit = _Visit(delivery_id, site_of(workspace, self.runtime.public_url))
        with workspace_scope(workspace.id):
            return await self._handle(request, visit)

    async def _handle(self, request: Request, visit: _Visit) -> Response:
        if request.method != "POST":
            return await self._centre(visit)
        posted = await _bounded_form(request)
        if posted is None:
            return self._page(visit.site, "too-large", status=413)
        body, form = posted
        action = form.get("action")
        # The RFC's body, as a form field or (from senders that leave out the Content-Type) as raw text.
        one_click = form.get(ONE_CLICK[0]) == ONE_CLICK[1] or body.strip() == ONE_CLICK_BODY
        if action is None and one_click:
            return await self._unsubscribe(request, visit, every_list=False)
        if not isinstance(action, str) or not self._nonce_ok(visit.delivery_id, form.get("nonce")):
            return self._page(visit.site, "refused", status=400)
        return await self._act(request, visit, action, form)

    async def _act(self, request: Request, visit: _Visit, action: str, form: FormData) -> Response:
        if action == "unsubscribe-all":
            return await self._unsubscribe(request, visit, every_list=True)
        async with self.runtime.db.session() as session:
            recipient = await centre.recipient_of(session, visit.delivery_id)
        if recipient is None:
            return self._page(visit.site, "invalid", status=404)
        email, subscriber_id = recipient
        if subscriber_id is None:
            return self._page(visit.site, "gone")
        if action in ("join", "leave"):
            return await self._change_list(visit, subscriber_id, action, form.get("list"))
        if action not in ("export", "erase"):
            return self._page(visit.site, "refused", status=400)
        if action == "erase" and form.get("confirm") != "yes":
            return self._page(visit.site, "erase", email=email, nonce=self.nonce(visit.delivery_id))
        try:
            if action == "export":
                return await self._export(subscriber_id)
            async with self.runtime.db.transaction() as session:
                await gdpr.erase_subscriber(session, subscriber_id)
        except NotFound:
            # Erased or deleted since the delivery was read.
            return self._page(visit.site, "gone")
        return self._page(visit.site, "erased")

    async def _unsubscribe(self, request: Request, visit: _Visit, *, every_list: bool) -> Response:
        ip = None if self.anonymous or request.client is None else request.client.host
        agent = None if self.anonymous else request.headers.get("user-agent", "")[:MAX_USER_AGENT] or None
        outcome = await unsubscribe_delivery(
            self.runtime.db,
            visit.delivery_id,
            ip=ip,
            user_agent=agent,
            live=self.runtime.live,
            every_list=every_list,
        )
        if outcome is None:
            return self._page(visit.site, "invalid", status=404)
        notice = (
            "You are unsubscribed from every list: you will receive no more of our emails."
            if every_list
            else "You are unsubscribed from the emails this message was sent through."
        )
        return await self._centre(visit, notice)

    async def _change_list(self, visit: _Visit, subscriber_id: int, action: str, raw: object) -> Response:
        if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 18):
            return self._page(visit.site, "refused", status=400)
        try:
            async with self.runtime.db.transaction() as session:
                if action == "join":
                    row = await centre.join(session, subscriber_id, int(raw))
                    notice = f"You joined {row.name}."
                else:
                    row = await centre.leave(session, subscriber_id, int(raw))
                    notice = f"You left {row.name}."
        except DomainError as exc:
            return await self._centre(visit, exc.errors[0].message, status=400, problem=True)
        return await self._centre(visit, notice)

    async def _export(self, subscriber_id: int) -> Response:
        async with self.runtime.db.session() as session:
            document = await gdpr.export_subscriber_data(session, subscriber_id, global_id=globalid.encode)
        return Response(
            json.dumps(document, indent=2, ensure_ascii=False),
            media_type="application/json",
            headers={
                **PAGE_HEADERS,
                "Content-Disposition": 'attachment; filename="my-data.json"',
            },
        )
