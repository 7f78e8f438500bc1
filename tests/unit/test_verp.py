"""VERP addresses: signed delivery tokens that survive case folding and refuse tampering."""

from __future__ import annotations

import pytest

from emailkit.domain.tokens import TokenSigner
from emailkit.domain.verp import ReturnPaths, VerpAddress, VerpKind, envelope_sender

SECRET = "verp-test-secret-0123456789abcdef"


@pytest.fixture
def paths() -> ReturnPaths:
    return ReturnPaths(TokenSigner(SECRET), "Bounces.Example.COM.")


@pytest.mark.parametrize("delivery_id", [1, 42, 255, 256, 10**9, 2**63 - 1])
def test_addresses_name_their_delivery_and_kind(paths: ReturnPaths, delivery_id: int) -> None:
    bounce = paths.bounce(delivery_id)
    unsubscribe = paths.unsubscribe(delivery_id)
    local, _, domain = bounce.partition("@")
    assert domain == "bounces.example.com"
    assert local.startswith("bounce+") and unsubscribe.startswith("unsubscribe+")
    # Lowercase letters and digits only after the prefix: a dot-atom, nothing an MTA would quote or fold.
    token = local.removeprefix("bounce+")
    assert token.isalnum() and token == token.lower() and len(local) <= 64
    assert paths.read(bounce) == VerpAddress(VerpKind.BOUNCE, delivery_id)
    assert paths.read(unsubscribe) == VerpAddress(VerpKind.UNSUBSCRIBE, delivery_id)


def test_case_folding_by_an_mta_keeps_the_address_valid(paths: ReturnPaths) -> None:
    address = paths.bounce(123456)
    assert paths.read(address.upper()) == VerpAddress(VerpKind.BOUNCE, 123456)
    assert paths.read(f"<{address.title()}>") == VerpAddress(VerpKind.BOUNCE, 123456)


def test_a_tampered_token_is_refused(paths: ReturnPaths) -> None:
    address = paths.bounce(77)
    local, _, domain = address.partition("@")
    for i in range(len("bounce+"), len(local)):
        swapped = "a" if local[i] != "a" else "b"
        forged = f"{local[:i]}{swapped}{local[i + 1 :]}@{domain}"
        assert paths.read(forged) is None, forged
    # Another delivery's id with this MAC, and a truncated token.
    assert paths.read(f"{local[:-1]}@{domain}") is None
    assert paths.read(f"{local}a@{domain}") is None


def test_the_kind_is_signed_too(paths: ReturnPaths) -> None:
    token = paths.token(VerpKind.BOUNCE, 9)
    assert paths.read(f"unsubscribe+{token}@bounces.example.com") is None
    assert paths.read(f"other+{token}@bounces.example.com") is None


def test_another_domain_or_another_key_is_refused(paths: ReturnPaths) -> None:
    token = paths.token(VerpKind.BOUNCE, 9)
    assert paths.read(f"bounce+{token}@example.com") is None
    assert paths.read(f"bounce+{token}@evil.bounces.example.com") is None
    other = ReturnPaths(TokenSigner("another-secret-0123456789abcdef"), "bounces.example.com")
    assert other.read(paths.bounce(9)) is None


@pytest.mark.parametrize(
    "address",
    [
        "postmaster@bounces.example.com",
        "bounce@bounces.example.com",
        "bounce+@bounces.example.com",
        "bounce+!!!!@bounces.example.com",
        "bounce+aaaaaaaa@bounces.example.com",
        "no-at-sign",
        "",
        "bounce+" + "a" * 200 + "@bounces.example.com",
    ],
)
def test_anything_else_is_no_address_of_ours(paths: ReturnPaths, address: str) -> None:
    assert paths.read(address) is None


def test_envelope_sender_is_the_bounce_address_of_real_deliveries_only(paths: ReturnPaths) -> None:
    assert envelope_sender(paths, "42", "news@example.com") == paths.bounce(42)
    # Test sends have no delivery to tie a bounce to.
    assert envelope_sender(paths, "test-0a1b2c", "news@example.com") == "news@example.com"
    assert envelope_sender(None, "42", "news@example.com") == "news@example.com"


def test_ids_outside_the_delivery_range_are_refused(paths: ReturnPaths) -> None:
    for bad in (0, -1, 2**63):
        with pytest.raises(ValueError):
            paths.bounce(bad)
    with pytest.raises(ValueError):
        ReturnPaths(TokenSigner(SECRET), "user@example.com")
