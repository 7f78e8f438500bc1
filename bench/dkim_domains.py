"""Per-message cost of choosing and applying DKIM keys by From domain (prints figures; not a test).

The providers ask the keyring once per batch and per (workspace, From domain), then sign each message with what it
answered. This measures the provider's side for a batch of 1,000 messages of 20 KB: no keyring at all (before
sending domains), a keyring whose workspace has no sending domain (the default path), the domain's RSA key, and
RSA plus Ed25519. The keyring answers from memory here, as it does between its refreshes (one database read per
workspace every 5 seconds, not measured).

    python bench/dkim_domains.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from emailkit.domain.ports.dkim import DkimKey, DkimKeyring
from emailkit.domain.ports.provider import Address, OutgoingMessage
from emailkit.domain.sending_domains import keys
from emailkit.providers.dkim_keys import MessageSigning
from emailkit.providers.mime import MimeBuilder

DOMAIN = "shop.example.test"


class Answer:
    def __init__(self, found: Sequence[DkimKey]) -> None:
        self.found = tuple(found)

    async def keys_for(self, workspace_id: int, from_domain: str) -> Sequence[DkimKey]:
        return self.found


def messages(n: int = 1000) -> list[OutgoingMessage]:
    body = "<p>" + "Hello reader, this week's news. " * 640 + "</p>"
    return [
        OutgoingMessage(
            delivery_id=f"d{i}",
            sender=f"news@{DOMAIN}",
            to=Address(f"reader{i}@example.org"),
            from_=Address(f"news@{DOMAIN}", "Shop"),
            subject="This week",
            html=body,
            workspace_id=1,
        )
        for i in range(n)
    ]


async def per_message(keyring: DkimKeyring | None, batch: list[OutgoingMessage], rounds: int) -> float:
    signing = MessageSigning(keyring=keyring)
    builder = MimeBuilder()
    data = [builder.build(m).data for m in batch]
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        signers = await signing.for_batch(batch)
        for message, raw in zip(batch, data, strict=True):
            signers.sign(message, raw)
        timings.append((time.perf_counter() - started) / len(batch))
    return statistics.median(timings)


async def main(rounds: int) -> None:
    rsa, ed = keys.rsa_pair(), keys.ed25519_pair()
    rsa_key = DkimKey(DOMAIN, "ek1", "rsa-sha256", rsa.private_pem.encode())
    ed_key = DkimKey(DOMAIN, "ek1e", "ed25519-sha256", ed.private_pem.encode())
    batch = messages()
    cases: list[tuple[str, DkimKeyring | None]] = [
        ("no keyring (before sending domains)", None),
        ("keyring, the workspace has no sending domain", Answer(())),
        ("the domain's RSA key", Answer((rsa_key,))),
        ("RSA + Ed25519", Answer((rsa_key, ed_key))),
    ]
    for name, keyring in cases:
        cost = await per_message(keyring, batch, rounds)
        print(f"{name:<48} {cost * 1e6:10.1f} µs/message")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
