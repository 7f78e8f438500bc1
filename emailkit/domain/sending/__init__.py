"""Sending: campaigns and their state machine, the scheduler's upkeep, the send pipeline and its ledger,
transactional messages, live progress, rate limits, and failure reports."""
