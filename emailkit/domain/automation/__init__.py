"""Automation: flows that people enter on a trigger (a subscription, a custom event sent by the user's own
systems, an anniversary, a segment, an open or a click) and go through step by step, exactly once per step."""
