"""`/` serves the console page and its bundle with strict headers; the Host header cannot add CSP directives."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from emailkit.web.console import console_csp, console_routes


def _client(tmp_path: Path) -> TestClient:
    folder = tmp_path / "console"
    folder.mkdir()
    (folder / "index.html").write_text("<!doctype html><title>console</title>")
    (folder / "console.js").write_text("console.log(1)")
    (folder / "console.css").write_text("body{}")
    return TestClient(Starlette(routes=console_routes(tmp_path)), base_url="http://emailkit.test:8000")


def test_page_and_bundle_with_strict_headers(tmp_path: Path) -> None:
    client = _client(tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and "<title>console</title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
    assert "connect-src 'self' ws://emailkit.test:8000 wss://emailkit.test:8000;" in csp
    assert page.headers["x-frame-options"] == "DENY"

    js = client.get("/static/console/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.text == "console.log(1)"
    again = client.get("/static/console/console.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/static/console/console.css").headers["content-type"].startswith("text/css")


def test_a_host_header_cannot_add_directives() -> None:
    assert console_csp("evil; script-src *") == console_csp(None)
    assert "ws:" not in console_csp("a b")
    assert "ws://[::1]:8000 " in console_csp("[::1]:8000")
