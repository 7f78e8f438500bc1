"""Outgoing webhooks: events of a workspace POSTed, signed, to the endpoints it registered.

- ``events``: the event types, what their ``data`` holds, and the envelope every message shares.
- ``emit``: writes a message per subscribed endpoint in the caller's transaction (the outbox), or nothing at
  all when no endpoint listens (a per-process cache answers that without a query).
- ``emitters``: one helper per family of events, called by the single owner of each change.
- ``endpoints``: the endpoints themselves, their delivery log and redelivery.
- ``destinations``: which URLs may receive (no loopback, private, link-local or metadata address).
- ``signing`` / ``sealing``: Standard Webhooks signatures; secrets sealed at rest.
- ``delivery``: the deliverer a job runs per endpoint (retries with backoff, per-key order, disabling);
  ``dispatch``: the ticker's part (endpoints with due messages get a job; old messages are pruned).

This package depends on no domain area (audience, content, sending, feedback): each of them calls it.
"""
