"""A list of n confirmed subscribers and a draft campaign to it, inserted in bulk (20,000 in about a second)."""

from __future__ import annotations

from sqlalchemy import insert

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, OptIn, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import Campaign, CampaignList

BODY = """<p>Hello {{ subscriber.name }},</p>
<p>This month: <a href="https://example.com/news">the news</a>.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>"""


def address(i: int) -> str:
    return f"reader{i:05d}@crash.test"


async def seed_campaign(db: Database, n: int) -> tuple[int, list[str]]:
    """n confirmed subscribers on one list and a draft campaign to that list; returns its id and the addresses."""
    emails = [address(i) for i in range(n)]
    async with db.transaction() as s:
        lst = MailingList(name="Readers", optin=OptIn.SINGLE)
        campaign = Campaign(
            name="Crash test",
            subject="News for {{ subscriber.name }}",
            from_email="news@crash.test",
            from_name="News",
            body=BODY,
            format=ContentFormat.HTML,
        )
        s.add_all([lst, campaign])
        await s.flush()
        ids: list[int] = []
        for start in range(0, n, 5000):
            rows = [
                {"email": e, "name": f"Reader {e[6:11]}", "attributes": {}}
                for e in emails[start : start + 5000]
            ]
            ids += (await s.execute(insert(Subscriber).returning(Subscriber.id), rows)).scalars().all()
        await s.execute(
            insert(Subscription),
            [
                {"subscriber_id": sid, "list_id": lst.id, "status": SubscriptionStatus.CONFIRMED}
                for sid in ids
            ],
        )
        s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
        return campaign.id, emails
