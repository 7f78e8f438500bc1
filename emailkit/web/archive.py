"""A workspace's public pages: the web view of one mail and the archive of its campaigns.

* ``GET /v/<token>``: the message of one delivery, as its recipient received it (see
  :mod:`emailkit.domain.sending.webview`). The signed token is the credential; the page is personal, so it is
  never cached or indexed and gives no referrer away.
* ``GET /archive/<slug>``: the campaigns the workspace published (``archive: true``, sent), newest first,
  ``?page=N``; ``/archive/<slug>/<campaign id>`` one of them; ``/archive/<slug>/feed.atom`` the latest as an
  Atom feed. Rendered with placeholder data and no tracking (:mod:`emailkit.domain.sending.archive`); cached by
  browsers and proxies for five minutes, revalidated by ETag (the content's version: the campaign's and its
  template's ``updated_at`` and the workspace's branding), and kept rendered here by ETag, so a busy archive
  costs one small query per request.

The message itself is shown in an ``<iframe sandbox srcdoc>``: it is a whole HTML document written by the
workspace's users, with its own styles (body resets, fixed widths, media queries) that must neither break the
page nor be broken by it. The sandbox gives it an opaque origin and no scripts, forms or navigation of the page;
its links open in a new tab (``allow-popups``). Every page sends a strict Content-Security-Policy (nothing from
elsewhere but the message's images, no scripts at all), which the framed message inherits.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from emailkit import globalid
from emailkit.boundedcache import BoundedLRU
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.content import Template
from emailkit.db.tables.sending import Campaign
from emailkit.domain.content.tracked_urls import PURPOSE_WEBVIEW, TrackingUrls
from emailkit.domain.errors import DomainError
from emailkit.domain.public_site import PublicSite, site_by_slug
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import archive
from emailkit.domain.sending.messages import MessageBuilder
from emailkit.domain.sending.webview import Unavailable, WebView, web_view
from emailkit.domain.tokens import TokenSigner
from emailkit.web import atom

PAGE_TEMPLATES = (
    "public_site.html",
    "webview.html",
    "archive_list.html",
    "archive_campaign.html",
    "missing.html",
)
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
PRIVATE_HEADERS = {
    **_SECURITY,
    "Cache-Control": "private, no-store",
    # The page's URL is the credential: no referrer to the sites its links lead to, no search engine.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
PUBLIC_CACHE = "public, max-age=300"
PUBLIC_HEADERS = {
    **_SECURITY,
    "Cache-Control": PUBLIC_CACHE,
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
MISSING_HEADERS = {**_SECURITY, "Cache-Control": "no-store"}
SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
# Rendered archive pages and feeds kept by ETag: at most this many, and this many bytes in all.
RENDERED_ENTRIES = 512
RENDERED_BYTES = 32 * 1024 * 1024

_HEAD_OPEN = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_BODY = re.compile(r"<body\b[^>]*>(.*)</body\s*>", re.IGNORECASE | re.DOTALL)
# Links in the framed message open in a new tab, and tell the sites they lead to nothing of this page.
_FRAME_HEAD = '<base target="_blank"><meta name="referrer" content="no-referrer">'


def framed(html: str) -> str:
    """The message as the iframe's srcdoc: its links open in a new tab, without a referrer."""
    head = _HEAD_OPEN.search(html)
    if head is None:
        return _FRAME_HEAD + html
    return html[: head.end()] + _FRAME_HEAD + html[head.end() :]


def body_of(html: str) -> str:
    """What is between <body> and </body> (a feed entry's HTML), or everything when there is no body."""
    found = _BODY.search(html)
    return (found.group(1) if found else html).strip()


def if_none_match(request: Request, etag: str) -> bool:
    """Whether the client's cached copy is current (RFC 9110 13.1.2: weak comparison, ``*`` matches)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _page_number(request: Request) -> int | None:
    raw = request.query_params.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4:
        return None
    page = int(raw)
    return page if 1 <= page <= archive.MAX_PAGE else None


def _date(value: datetime | None) -> str:
    return "" if value is None else f"{value.day} {value:%B %Y}"


class PublicPages:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.signer = TokenSigner(runtime.secret_key)
        self.builder = MessageBuilder(TrackingUrls(runtime.public_url, self.signer))
        env = Environment(
            loader=PackageLoader("emailkit.web", "templates"),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
        )
        self.templates = {name: env.get_template(name) for name in PAGE_TEMPLATES}
        # A new release's pages are new content: their source is part of every ETag.
        sources = "".join(env.loader.get_source(env, name)[0] for name in PAGE_TEMPLATES)  # type: ignore[union-attr]
        self.pages_version = hashlib.sha256(sources.encode()).hexdigest()[:12]
        self.rendered: BoundedLRU[str, bytes] = BoundedLRU(
            max_entries=RENDERED_ENTRIES, max_weight=RENDERED_BYTES
        )

    # -- rendering ------------------------------------------------------------------------------------------

    def _html(self, template: str, **values: Any) -> str:
        return self.templates[template].render(**values)

    def _missing(self, status: int = 404) -> HTMLResponse:
        title = "This message is no longer available" if status == 410 else "Page not found"
        body = self._html("missing.html", site=None, title=title, gone=status == 410)
        return HTMLResponse(body, status_code=status, headers=MISSING_HEADERS)

    def _etag(self, site: PublicSite, *parts: str) -> str:
        return f'"{archive.versions_digest(self.pages_version, site.version, *parts)}"'

    async def _cached(
        self, request: Request, etag: str, media_type: str, render: Callable[[], Awaitable[bytes]]
    ) -> Response:
        """304 when the client has this version; else the body rendered for this ETag, rendering it once."""
        headers = {**PUBLIC_HEADERS, "ETag": etag}
        if if_none_match(request, etag):
            return Response(status_code=304, headers=headers)
        body = self.rendered.get(etag)
        if body is None:
            body = await render()
            self.rendered.put(etag, body, len(body))
        return Response(body, media_type=media_type, headers=headers)

    # -- web view -------------------------------------------------------------------------------------------

    def _delivery_id(self, token: str) -> int | None:
        parts = self.signer.verify(PURPOSE_WEBVIEW, token)
        if parts is None or len(parts) != 1 or not globalid.is_pk(parts[0]):
            return None
        return int(parts[0])

    async def web_view(self, request: Request) -> Response:
        delivery_id = self._delivery_id(request.path_params["token"])
        if delivery_id is None:
            return self._missing()
        found = await web_view(
            self.runtime.db, self.builder, delivery_id, default_base_url=self.runtime.public_url
        )
        if isinstance(found, Unavailable):
            return self._missing(410 if found is Unavailable.GONE else 404)
        return HTMLResponse(self._web_view_page(found), headers=PRIVATE_HEADERS)

    def _web_view_page(self, view: WebView) -> str:
        return self._html(
            "webview.html",
            site=view.site,
            title=view.subject,
            private=True,
            srcdoc=None if view.html is None else framed(view.html),
            sandbox=SANDBOX,
        )

    # -- archive --------------------------------------------------------------------------------------------

    async def _site(self, request: Request) -> PublicSite | None:
        return await site_by_slug(self.runtime.db, request.path_params["slug"], self.runtime.public_url)

    def _campaign_url(self, site: PublicSite, campaign_id: int) -> str:
        return f"{site.base_url}/archive/{site.slug}/{globalid.encode('Campaign', campaign_id)}"

    async def archive_list(self, request: Request) -> Response:
        site = await self._site(request)
        page = _page_number(request)
        if site is None or page is None:
            return self._missing()
        with workspace_scope(site.workspace_id):
            async with self.runtime.db.read_session() as session:
                listed = await archive.archive_page(session, page)
        if not listed.campaigns and page > 1:
            return self._missing()
        versions = [f"{c.id}:{c.updated_at.isoformat()}" for c in listed.campaigns]
        etag = self._etag(site, "list", str(page), str(listed.has_next), *versions)

        async def render() -> bytes:
            return (await asyncio.to_thread(self._list_page, site, page, listed)).encode()

        return await self._cached(request, etag, "text/html; charset=utf-8", render)

    def _list_page(self, site: PublicSite, page: int, listed: archive.ArchivePage) -> str:
        items = []
        for campaign in listed.campaigns:
            gid = globalid.encode("Campaign", campaign.id)
            try:
                subject = archive.archived_subject(campaign, self._campaign_url(site, campaign.id))
            except DomainError:
                subject = campaign.name
            sent = campaign.started_at or campaign.created_at
            items.append({"href": f"{site.slug}/{gid}", "subject": subject, "date": _date(sent), "iso": sent})
        return self._html(
            "archive_list.html",
            site=site,
            title="Email archive",
            home=site.slug,
            items=items,
            page=page,
            newer=None if page == 1 else (site.slug if page == 2 else f"?page={page - 1}"),
            older=f"?page={page + 1}" if listed.has_next else None,
            feed_href=f"{site.slug}/feed.atom",
            feed_url=f"{site.base_url}/archive/{site.slug}/feed.atom",
        )

    async def _archived(self, site: PublicSite, campaign_id: int) -> tuple[Campaign, Template | None] | None:
        with workspace_scope(site.workspace_id):
            async with self.runtime.db.read_session() as session:
                campaign = await archive.archived_campaign(session, campaign_id)
                if campaign is None:
                    return None
                templates = await archive.templates_of(session, [campaign])
        return campaign, templates.get(campaign.template_id or 0)

    async def archive_campaign(self, request: Request) -> Response:
        site = await self._site(request)
        campaign_id = globalid.pk_of(request.path_params["campaign"], "Campaign")
        if site is None or campaign_id is None:
            return self._missing()
        found = await self._archived(site, campaign_id)
        if found is None:
            return self._missing()
        campaign, template = found
        etag = self._etag(site, "campaign", archive.content_version(campaign, template))

        async def render() -> bytes:
            page = await asyncio.to_thread(self._campaign_page, site, campaign, template)
            return page.encode()

        return await self._cached(request, etag, "text/html; charset=utf-8", render)

    def _campaign_page(self, site: PublicSite, campaign: Campaign, template: Template | None) -> str:
        try:
            rendered = archive.render_archived(campaign, template, self._campaign_url(site, campaign.id))
            subject, srcdoc = rendered.subject, framed(rendered.html)
        except DomainError:
            subject, srcdoc = campaign.name, None
        sent = campaign.started_at or campaign.created_at
        return self._html(
            "archive_campaign.html",
            site=site,
            title=subject,
            home=f"../{site.slug}",
            subject=subject,
            date=_date(sent),
            iso=sent,
            srcdoc=srcdoc,
            sandbox=SANDBOX,
            feed_url=f"{site.base_url}/archive/{site.slug}/feed.atom",
        )

    async def archive_feed(self, request: Request) -> Response:
        site = await self._site(request)
        if site is None:
            return self._missing()
        with workspace_scope(site.workspace_id):
            async with self.runtime.db.read_session() as session:
                latest = (await archive.archive_page(session, 1, size=archive.FEED_SIZE)).campaigns
                templates = await archive.templates_of(session, latest)
        pairs = [(c, templates.get(c.template_id or 0)) for c in latest]
        etag = self._etag(site, "feed", *(archive.content_version(c, t) for c, t in pairs))

        async def render() -> bytes:
            return await asyncio.to_thread(self._feed, site, pairs)

        return await self._cached(request, etag, atom.MEDIA_TYPE, render)

    def _feed(self, site: PublicSite, pairs: Sequence[tuple[Campaign, Template | None]]) -> bytes:
        home = f"{site.base_url}/archive/{site.slug}"
        # Tag URIs (RFC 4151): ids that stay when the slug changes, unlike the pages' addresses.
        tag = f"tag:{urlsplit(site.base_url).hostname or 'localhost'},{site.created_at:%Y-%m-%d}:emailkit/"
        entries = [self._entry(site, f"{tag}campaign/{c.id}", c, t) for c, t in pairs]
        return atom.feed_document(
            atom.Feed(
                id=f"{tag}workspace/{site.workspace_id}/archive",
                title=f"{site.name}: email archive",
                updated=max((e.updated for e in entries), default=site.created_at),
                self_url=f"{home}/feed.atom",
                alternate_url=home,
                author=site.name,
                icon=site.logo_url,
                entries=entries,
            )
        )

    def _entry(
        self, site: PublicSite, entry_id: str, campaign: Campaign, template: Template | None
    ) -> atom.Entry:
        url = self._campaign_url(site, campaign.id)
        updated = (
            max(campaign.updated_at, template.updated_at) if template is not None else campaign.updated_at
        )
        try:
            rendered = archive.render_archived(campaign, template, url)
        except DomainError:
            return atom.Entry(
                id=entry_id,
                title=campaign.name,
                link=url,
                updated=updated,
                published=campaign.started_at,
                html=None,
                summary="This message cannot be shown.",
            )
        return atom.Entry(
            id=entry_id,
            title=rendered.subject,
            link=url,
            updated=updated,
            published=campaign.started_at,
            html=body_of(rendered.html),
        )


def archive_routes(runtime: Runtime) -> list[Route]:
    pages = PublicPages(runtime)
    return [
        Route("/v/{token}", pages.web_view, methods=["GET"]),
        Route("/archive/{slug}", pages.archive_list, methods=["GET"]),
        # Before the campaign route: a campaign's global id never contains a dot.
        Route("/archive/{slug}/feed.atom", pages.archive_feed, methods=["GET"]),
        Route("/archive/{slug}/{campaign}", pages.archive_campaign, methods=["GET"]),
    ]
