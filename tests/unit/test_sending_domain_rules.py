"""Sending domains without I/O: what a domain may be called, which parents cover a From domain, how each record is
judged from what DNS returned, and the settings (the rule's default per mode, the DNS servers, the SPF include)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emailkit.domain.errors import DomainError
from emailkit.domain.sending_domains.config import DomainConfig
from emailkit.domain.sending_domains.dns_check import RecordStatus, judge
from emailkit.domain.sending_domains.names import ascii_domain, normalise_domain, parents
from emailkit.domain.sending_domains.records import ExpectedRecord, RecordKind
from emailkit.settings import Settings, SettingsError, load_settings

PRODUCTION = {"database_url": "postgresql://u@db.internal/mail", "secret_key": "0123456789abcdef0123"}


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("Example.COM", "example.com"),
        ("  news.example.com ", "news.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("mail-1.example.co.uk", "mail-1.example.co.uk"),
    ],
)
def test_domains_are_stored_lower_case_in_ascii(text: str, stored: str) -> None:
    assert normalise_domain(text) == stored


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10.0.0.1", "IP address"),
        ("::1", "not an address"),
        ("example.com.", "trailing dot"),
        ("com", "top-level domain"),
        ("example.c0m1", "not a top-level domain"),
        ("ex_ample.com", "not a valid"),
    ],
)
def test_bad_domains_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(DomainError) as caught:
        normalise_domain(text)
    [error] = caught.value.errors
    assert (error.field, error.code.value) == ("domain", "INVALID_DOMAIN")
    assert says.lower() in error.message.lower()


def test_parents_stop_before_the_top_level_domain() -> None:
    assert parents("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]
    assert parents("example.com") == ["example.com"]
    assert ascii_domain("Bücher.Example.") == "xn--bcher-kva.example"


def _dkim(key_type: str = "rsa", key: str = "AAAB") -> ExpectedRecord:
    return ExpectedRecord(
        RecordKind.DKIM,
        "TXT",
        "s._domainkey.example.com",
        "",
        required=True,
        key_type=key_type,
        public_key=key,
    )


def _spf() -> ExpectedRecord:
    return ExpectedRecord(RecordKind.SPF, "TXT", "example.com", "", required=True)


def test_dkim_records_are_compared_by_key_and_key_type() -> None:
    config = DomainConfig()
    assert judge(_dkim(), ["v=DKIM1; k=rsa; p=AA AB"], config)[0] is RecordStatus.FOUND
    # k= defaults to rsa; tags in any order.
    assert judge(_dkim(), ["p=AAAB; v=DKIM1"], config)[0] is RecordStatus.FOUND
    assert judge(_dkim(), ["v=DKIM1; k=rsa; p=OTHER"], config)[0] is RecordStatus.WRONG
    assert judge(_dkim("ed25519"), ["v=DKIM1; k=rsa; p=AAAB"], config)[0] is RecordStatus.WRONG
    assert judge(_dkim(), ["some text"], config)[0] is RecordStatus.WRONG
    assert judge(_dkim(), [], config)[0] is RecordStatus.MISSING


def test_spf_needs_the_configured_include_and_one_record() -> None:
    with_include = DomainConfig(spf_include="amazonses.com")
    assert judge(_spf(), ["v=spf1 include:amazonses.com ~all"], with_include)[0] is RecordStatus.FOUND
    assert judge(_spf(), ["v=spf1 +include:AmazonSES.com -all"], with_include)[0] is RecordStatus.FOUND
    assert judge(_spf(), ["v=spf1 mx ~all"], with_include)[0] is RecordStatus.WRONG
    assert (
        judge(_spf(), ["v=spf1 include:amazonses.com.evil.test ~all"], with_include)[0] is RecordStatus.WRONG
    )
    # Without a known sending service any single SPF record will do.
    assert judge(_spf(), ["v=spf1 mx ~all", "other"], DomainConfig())[0] is RecordStatus.FOUND
    assert judge(_spf(), ["v=spf1 mx", "v=spf1 a"], DomainConfig())[0] is RecordStatus.WRONG
    assert judge(_spf(), ["google-site-verification=x"], DomainConfig())[0] is RecordStatus.MISSING


def test_the_rule_defaults_to_on_in_production_and_off_when_embedded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("EMAILKIT_REQUIRE_VERIFIED_DOMAINS", raising=False)
    assert Settings(data_dir=tmp_path).requires_verified_domains is False
    assert Settings(**PRODUCTION).requires_verified_domains is True
    assert Settings(**PRODUCTION).domain_config().require_verified is True
    monkeypatch.setenv("EMAILKIT_REQUIRE_VERIFIED_DOMAINS", "false")
    assert Settings(**PRODUCTION).requires_verified_domains is False
    monkeypatch.setenv("EMAILKIT_REQUIRE_VERIFIED_DOMAINS", "true")
    assert Settings(data_dir=tmp_path).requires_verified_domains is True


def test_domain_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILKIT_DNS_NAMESERVERS", "127.0.0.1:5353, 192.0.2.53, [::1]:5300")
    config = Settings(
        provider="ses", dkim_domain="Mail.Example.com", bounce_domain="bounce.example.net"
    ).domain_config()
    assert config.nameservers == (("127.0.0.1", 5353), ("192.0.2.53", 53), ("::1", 5300))
    assert config.spf_include == "amazonses.com"
    assert config.trusted_domains == frozenset({"mail.example.com"})
    assert config.bounce_domain == "bounce.example.net"
    assert Settings(provider="sendgrid", sendgrid_api_key="x").domain_config().spf_include == "sendgrid.net"
    assert (
        Settings(provider="smtp", spf_include="_spf.relay.test").domain_config().spf_include
        == "_spf.relay.test"
    )
    assert Settings().domain_config().spf_include is None
    assert Settings(dns_nameservers=["127.0.0.2:5353"]).domain_config().nameservers == (("127.0.0.2", 5353),)


@pytest.mark.parametrize("value", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:http"])
def test_bad_nameservers_name_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("EMAILKIT_DNS_NAMESERVERS", value)
    with pytest.raises(SettingsError, match="EMAILKIT_DNS_NAMESERVERS"):
        load_settings()
