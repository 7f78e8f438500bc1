"""`emailkit bounce-server` run as an operator would: a subprocess on a free port, talked to with smtplib."""

from __future__ import annotations

import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from emailkit.domain.tokens import TokenSigner
from emailkit.domain.verp import ReturnPaths
from tests.integration.test_cli import (
    EMAILKIT,
    TIMEOUT,
    _base_env,
    _free_port,
    assert_one_line_error,
    emailkit,
    stop_server,
)
from tests.support.environment import TEST_SECRET


def _wait_for_smtp(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bounce-server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as probe:
                probe.noop()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"bounce-server did not listen within {TIMEOUT}s:\n{log.read_text()}")


def test_it_needs_a_bounce_domain(tmp_path: Path) -> None:
    result = emailkit(tmp_path, _base_env(tmp_path), "bounce-server", "--port", str(_free_port()))
    assert_one_line_error(result, "EMAILKIT_BOUNCE_DOMAIN")


def test_it_takes_only_our_addresses_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **_base_env(tmp_path),
        "EMAILKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bounces.db'}",
        "EMAILKIT_SECRET_KEY": TEST_SECRET,
        "EMAILKIT_BOUNCE_DOMAIN": "bounces.example.com",
    }
    assert emailkit(tmp_path, env, "migrate").returncode == 0
    port = _free_port()
    log = tmp_path / "bounce-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(EMAILKIT), "bounce-server", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_smtp(proc, port, log)
        ours = ReturnPaths(TokenSigner(TEST_SECRET), "bounces.example.com").bounce(12345)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            code, greeting = client.ehlo("mx.example.net")
            assert code == 250 and greeting.startswith(b"bounces.example.com")
            assert client.mail("<>")[0] == 250
            assert client.rcpt("someone@example.org") == (550, b"5.1.1 No such recipient here")
            assert client.rcpt(ours)[0] == 250
            # A delivery this database never had: accepted and dropped.
            assert client.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250
    finally:
        returncode = stop_server(proc)
    text = log.read_text()
    assert returncode == 0, text
    assert "bounce+…@ and unsubscribe+…@bounces.example.com" in text
