"""Automation: flows that people enter on a trigger and go through step by step, exactly once per step."""
