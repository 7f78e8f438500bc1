"""Email addresses as people other than their owner may see them: on a public page, in a log line."""

from __future__ import annotations

import re

# Loose on purpose: it finds what looks like an address in free text (a log message, an exception), where a
# strict parser would skip the odd one that then leaks. "/", "=" and "?", legal but rare in addresses, are left
# out so that a URL's "?to=jane@example.com" keeps its "to=".
_ADDRESS = re.compile(r"[\w.!#$%&'*+^`{|}~-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j…e@example.com``: enough to recognise, little to a forwardee."""
    local, at, domain = email.partition("@")
    if not at:
        return "…"
    shown = local[0] + "…" + local[-1] if len(local) > 2 else local[:1] + "…"
    return f"{shown}@{domain}"


def _masked(match: re.Match[str]) -> str:
    text, start = match.string, match.start()
    # The user of a URL (postgresql://mailer@db.example.com) is a login, not a person's address; the password
    # in such a URL is already redacted where URLs are shown.
    word_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
    if "://" in text[word_start:start]:
        return match.group()
    return mask_email(match.group())


def mask_addresses(text: str) -> str:
    """Every address in `text` masked with :func:`mask_email`."""
    if "@" not in text:
        return text
    return _ADDRESS.sub(_masked, text)
