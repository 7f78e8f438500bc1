"""Ports: the interfaces the domain owns and infrastructure implements.

``provider`` is what an email provider offers the send pipeline; ``webhooks`` the shape every provider's
feedback is normalised into and the parser each webhook route uses; ``queue`` the job queue and pub/sub.
"""
