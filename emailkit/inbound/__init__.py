"""Mail that comes back to us: delivery status notifications, complaint reports and unsubscribe mails.

``reports`` turns a received message into normalised feedback events (a pure function, shared by every way mail
reaches us); ``server`` is ``emailkit bounce-server``, the SMTP receiver for the bounce domain's MX.
"""
