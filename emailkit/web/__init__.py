"""The HTTP surface, route by route: the GraphQL view (with its admission control, persisted queries and upload
guard), health probes, provider webhooks, tracking (open, click, unsubscribe), the preference centre, the public
subscribe and confirm pages, the CSV export, and the edge middleware (body limits, rate limits, trusted
proxies). Each module calls into ``emailkit.domain``; ``emailkit.app`` assembles them."""
