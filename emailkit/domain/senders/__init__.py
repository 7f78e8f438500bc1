"""Senders: named provider configurations of a workspace (``store``), and which one a message goes through
(``routing``: a provider per sender per process, with the sender's own shared rate limit).

The instance's default sender is not a row: it is the provider of EMAILKIT_PROVIDER, used wherever no sender is
named (NULL ``sender_id``), so an instance that configures nothing sends exactly as before senders existed.
"""
