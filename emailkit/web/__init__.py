"""The HTTP surface: the routes and the edge middleware. Each module calls into ``emailkit.domain``;
``emailkit.app`` assembles them.

Routes:

* ``graphql``: ``/graphql`` over HTTP and WebSocket, with API-key authentication, and the GraphiQL page (its
  assets in ``static/``, no CDN). ``persisted`` holds the automatic persisted queries it runs; in front of
  its HTTP side, ``admission`` lets a bounded number of requests execute at once (the next wait briefly, the
  rest get 503) and ``uploads`` guards multipart requests against cross-site posts.
* ``tracking``: the open pixel and click redirect, answered ahead of routing, and ``/u/<token>``, whose
  unsubscribe link and preference centre are in ``preferences``.
* ``public``: the subscribe form endpoint and the double opt-in confirmation page.
* ``webhooks``: provider feedback, verified, normalised and recorded.
* ``export``: the subscribers CSV export.
* ``health``: liveness and readiness probes.

``ratelimit`` holds the per-API-key request budget (GraphQL and the export) and the storage of the per-address
limit of ``/subscribe``.

Edge middleware, outermost first: ``proxy`` (the client's address behind trusted proxies), ``bodylimit``
(every body bounded before it is read), the tracking hot path, then Starlette's CORS when
EMAILKIT_CORS_ORIGINS is set. Page templates are in ``templates/``.
"""
