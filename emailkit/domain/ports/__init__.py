"""Ports: the interfaces the domain owns and infrastructure implements.

``provider`` is what an email provider offers the send pipeline; ``ratelimit`` the send-rate limit it awaits;
``webhooks`` the shape every provider's feedback is normalised into and the parser each webhook route uses;
``queue`` the job queue and pub/sub; ``dkim`` the keyring the signing providers ask for a From domain's keys.
A protocol whose implementations all live inside the domain (the send loop's ``BatchLedger``) stays with them.
"""
