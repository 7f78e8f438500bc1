"""The Dramatiq broker: jobs declared, the broker built for a URL, and the domain's job queue over it.

A job is an ``async def`` taking the worker's :class:`~emailkit.domain.runtime.Runtime` first and ids as
keyword arguments::

    @job("send_batch", queue="sending", time_limit=30 * 60_000)
    async def send_batch(runtime: Runtime, *, campaign_id: int, batch_id: int) -> None: ...

``@job`` only records the function. :func:`~.factory.configure_broker` builds the broker for a URL
(in-process, Redis or RabbitMQ), installs it as Dramatiq's global broker and declares every recorded job on it
as an actor; domain code then enqueues by name through the :class:`~emailkit.domain.ports.queue.JobQueue` port
(:class:`~.queue.DramatiqJobQueue`).

* ``registry``: the ``@job`` decorator and the jobs it recorded.
* ``factory``: the broker for a URL (in-process, Redis or RabbitMQ), with every job declared on it.
* ``redis_broker``: the Redis broker that finds a dead worker's messages within about a heartbeat.
* ``middleware``: what every broker runs (retries, time limits, asyncio) and the jobs' worker runtime.
* ``queue``: the ``JobQueue`` port over a broker.
* ``connection``: whether a broker URL answers, and the URL fit to print.
"""
