"""Per-message cost of MIME assembly for a 20 KB HTML body (prints figures; not a test).

Compares the fast builder (emailkit.providers.mime) with the stdlib ``email.message.EmailMessage`` on the same
message, for an ASCII body (7bit path) and a non-ASCII one (base64 path), with and without DKIM signing.

    python bench/mime.py [--n 5000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emailkit.domain.ports.provider import Address, OutgoingMessage
from emailkit.providers.dkim import DkimSigner
from emailkit.providers.mime import MimeBuilder

ROW = (
    '<tr><td style="padding:10px 20px;font-family:Helvetica,Arial,sans-serif;font-size:15px">'
    'Hello {name}, this week: <a href="https://mail.example.com/c/{i}/AbCdEfGhIjKlMnOpQrStUvWxYz0123">'
    "read the story</a>{extra}</td></tr>\n"
)


def html_body(name: str, extra: str, size: int = 20_000) -> str:
    rows: list[str] = []
    total = 0
    i = 0
    while total < size:
        row = ROW.format(name=name, i=i, extra=extra)
        rows.append(row)
        total += len(row.encode())
        i += 1
    return "<html><body><table>\n" + "".join(rows) + "</table></body></html>\n"


def message(i: int, html: str) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=f"c1-{i}",
        sender="bounces@news.example.com",
        to=Address(f"user{i}@example.org", "Ada Lovelace"),
        from_=Address("news@news.example.com", "Example News"),
        subject="This week at Example: the news you asked for",
        html=html,
        text="Hello Ada,\n\nthis week's stories are at https://example.com/stories\n",
        headers={
            "List-Unsubscribe": f"<https://mail.example.com/u/{i}/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Example News <news.example.com>",
        },
    )


def stdlib(msg: OutgoingMessage) -> bytes:
    em = EmailMessage()
    em["From"] = f"{msg.from_.name} <{msg.from_.email}>"
    em["To"] = f"{msg.to.name} <{msg.to.email}>"
    em["Subject"] = msg.subject
    for name, value in msg.headers.items():
        em[name] = value
    em.set_content(msg.text or "")
    em.add_alternative(msg.html or "", subtype="html")
    return em.as_bytes(policy=SMTP)


def per_message_us(fn: Callable[[OutgoingMessage], object], msgs: list[OutgoingMessage]) -> float:
    start = time.perf_counter()
    for m in msgs:
        fn(m)
    return (time.perf_counter() - start) / len(msgs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = DkimSigner("news.example.com", "s1", pem)
    builder = MimeBuilder()

    for label, extra in (("ASCII (7bit)", ""), ("non-ASCII (base64)", " — café")):
        html = html_body("Ada", extra)
        msgs = [message(i, html) for i in range(args.n)]
        size = len(builder.build(msgs[0]).data)
        fast = per_message_us(builder.build, msgs)
        signed = per_message_us(lambda m: signer.sign(builder.build(m).data), msgs)
        slow = per_message_us(stdlib, msgs[: max(200, args.n // 20)])
        print(f"{label}: {len(html.encode()) / 1000:.1f} KB html, {size / 1000:.1f} KB message")
        print(f"  emailkit MimeBuilder      {fast:8.1f} µs/message  ({1e6 / fast:8.0f} msg/s per core)")
        print(f"  MimeBuilder + DKIM (RSA)  {signed:8.1f} µs/message  ({1e6 / signed:8.0f} msg/s per core)")
        print(f"  email.message stdlib      {slow:8.1f} µs/message  ({1e6 / slow:8.0f} msg/s per core)")


if __name__ == "__main__":
    main()
