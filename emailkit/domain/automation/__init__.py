"""Automation: custom events sent by the user's own systems, and the flows they (and other triggers) start."""
