"""The data of bench/send.py: a fresh schema, N subscribers loaded with COPY, and the personalised MJML
newsletter campaign it sends."""

from __future__ import annotations

import json
import random
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from benchlib import connect_as_default_workspace

PUBLIC_URL = "https://news.example.com"


CITIES = ("Berlin", "Lisbon", "Oslo", "Toronto", "Osaka", "Lagos", "Lima", "Perth")


FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Donald")


ARTICLE = """    <mj-section padding="10px 0">
      <mj-column>
        <mj-image src="https://cdn.example.com/articles/{n}.jpg" alt="Article {n}" width="560px" />
        <mj-text font-size="18px" font-weight="bold">{n}. {title}</mj-text>
        <mj-text>{summary} Picked for readers in {{{{ subscriber.attributes.city | default('your city') }}}}.
        </mj-text>
        <mj-button href="https://example.com/articles/{n}?utm_source=newsletter">Read more</mj-button>
      </mj-column>
    </mj-section>"""


SUMMARY = (
    "A short summary of the story that tells the reader why it matters this week, with enough words to "
    "look like a real newsletter paragraph rather than a placeholder. "
)


# Five tracked links (four buttons and the archive link), the unsubscribe link (never rewritten) and,
# added by the pipeline, the open pixel.
NEWSLETTER = (
    """<mjml>
  <mj-head>
    <mj-title>{{ campaign.subject }}</mj-title>
    <mj-preview>This week for {{ subscriber.attributes.first_name | default(subscriber.name) }}</mj-preview>
    <mj-attributes>
      <mj-all font-family="Helvetica, Arial, sans-serif" />
      <mj-text font-size="15px" line-height="22px" color="#333333" />
    </mj-attributes>
  </mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section background-color="#ffffff">
      <mj-column>
        <mj-image src="https://cdn.example.com/logo.png" alt="Example News" width="160px" />
        <mj-text font-size="22px">
          Hello {{ subscriber.attributes.first_name | default(subscriber.name) }},</mj-text>
        <mj-text>Here is what happened this week.
          {% if subscriber.attributes.plan == 'pro' %}As a pro member you read it first.{% endif %}</mj-text>
      </mj-column>
    </mj-section>
"""
    + "\n".join(ARTICLE.format(n=i + 1, title=f"Story number {i + 1}", summary=SUMMARY * 2) for i in range(4))
    + """
    <mj-section>
      <mj-column>
        <mj-divider border-color="#dddddd" />
        <mj-text font-size="12px" color="#888888">Older issues are in the
          <a href="https://example.com/archive">archive</a>.
          You receive this because {{ subscriber.email }} subscribed.
          <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""
)


SUBJECT = "{{ subscriber.attributes.first_name | default('Hello') }}, your weekly digest"


def asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


async def reset_schema(url: str) -> None:
    from emailkit import migrate
    from emailkit.db.engine import Database

    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    db = Database(re.sub(r"^postgresql://", "postgresql+asyncpg://", url))
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()


async def load_audience(url: str, n: int) -> int:
    """n subscribers of the default workspace, all CONFIRMED on one list; returns the list id.

    COPY goes into temporary tables and on with INSERT ... SELECT: PostgreSQL refuses COPY into a table under
    row-level security, which holds for the role emailkit runs as."""
    rng = random.Random(42)
    now = datetime.now(UTC)
    conn = await connect_as_default_workspace(asyncpg_dsn(url))
    try:
        list_id = await conn.fetchval(
            "INSERT INTO lists (name, description, optin, visibility, tags, workspace_id, created_at, updated_at) "
            "VALUES ('Weekly digest', '', 'SINGLE', 'PRIVATE', '[]', 1, $1, $1) RETURNING id",
            now,
        )
        subscribers = []
        for i in range(1, n + 1):
            first = FIRST_NAMES[i % len(FIRST_NAMES)]
            attributes = {
                "first_name": first,
                "city": rng.choice(CITIES),
                "plan": "pro" if i % 4 == 0 else "free",
                "points": rng.randrange(1000),
            }
            subscribers.append(
                (
                    i,
                    f"reader{i}@example.org",
                    f"{first} Reader{i}",
                    json.dumps(attributes),
                    "ENABLED",
                    now,
                    now,
                )
            )
        await _copy_through(
            conn,
            "subscribers",
            ["id", "email", "name", "attributes", "status", "created_at", "updated_at"],
            subscribers,
        )
        await _copy_through(
            conn,
            "subscriptions",
            ["subscriber_id", "list_id", "status", "created_at", "updated_at"],
            [(i, list_id, "CONFIRMED", now, now) for i in range(1, n + 1)],
        )
        await conn.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), $1)", n)
        await conn.execute("ANALYZE")
        return int(list_id)
    finally:
        await conn.close()


async def _copy_through(
    conn: asyncpg.Connection, table: str, columns: list[str], records: list[tuple[object, ...]]
) -> None:
    staging = f"staging_{table}"
    names = ", ".join(columns)
    await conn.execute(f"CREATE TEMP TABLE {staging} AS SELECT {names} FROM {table} WITH NO DATA")
    await conn.copy_records_to_table(staging, records=records, columns=columns)
    await conn.execute(f"INSERT INTO {table} ({names}, workspace_id) SELECT {names}, 1 FROM {staging}")
    await conn.execute(f"DROP TABLE {staging}")


async def create_campaign(url: str, list_id: int) -> tuple[int, str]:
    """The campaign (DRAFT) and an admin API key."""
    from emailkit.db.engine import Database
    from emailkit.db.tables.access import Role
    from emailkit.db.tables.content import ContentFormat
    from emailkit.db.tables.sending import Campaign, CampaignList
    from emailkit.domain.apikeys import create_api_key
    from emailkit.domain.content.rendering import validate_content

    validate_content(NEWSLETTER, ContentFormat.MJML, subject=SUBJECT)
    db = Database(re.sub(r"^postgresql://", "postgresql+asyncpg://", url))
    try:
        async with db.transaction() as s:
            campaign = Campaign(
                name="Weekly digest (benchmark)",
                subject=SUBJECT,
                from_email="news@news.example.com",
                from_name="Example News",
                body=NEWSLETTER,
                format=ContentFormat.MJML,
                track_opens=True,
                track_clicks=True,
            )
            s.add(campaign)
            await s.flush()
            s.add(CampaignList(campaign_id=campaign.id, list_id=list_id))
            _, key = await create_api_key(s, "bench", Role.ADMIN)
            return campaign.id, key
    finally:
        await db.dispose()


async def message_size(url: str, campaign_id: int, secret: str, samples: int = 50) -> int:
    """Average bytes on the wire per message, built by the pipeline's own per-recipient path."""
    from emailkit.db.engine import Database
    from emailkit.db.tables.sending import Campaign
    from emailkit.domain.content.tracked_urls import TrackingUrls
    from emailkit.domain.sending.ledger import Pending
    from emailkit.domain.sending.pipeline import CampaignSender
    from emailkit.domain.tokens import TokenSigner
    from emailkit.providers.mime import MimeBuilder
    from emailkit.providers.outbox import OutboxProvider

    db = Database(re.sub(r"^postgresql://", "postgresql+asyncpg://", url))
    try:
        sender = CampaignSender(
            db,
            OutboxProvider(Path(tempfile.gettempdir())),
            "smtp",
            TrackingUrls(PUBLIC_URL, TokenSigner(secret)),
        )
        async with db.session() as s:
            campaign = await s.get(Campaign, campaign_id)
            assert campaign is not None
            compiled = await sender.messages.compile(s, campaign)
        builder = MimeBuilder()
        sizes = []
        for i in range(1, samples + 1):
            attributes = {
                "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
                "city": CITIES[i % 8],
                "plan": "pro",
            }
            pending = Pending(10_000 + i, i, f"reader{i}@example.org", f"Reader {i}", attributes, 0)
            sizes.append(len(builder.build(sender.messages.build(compiled, pending)).data))
        return sum(sizes) // len(sizes)
    finally:
        await db.dispose()
