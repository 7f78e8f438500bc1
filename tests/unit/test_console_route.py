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


def test_chunks_are_cached_for_good_and_everything_is_gzipped(tmp_path: Path) -> None:
    client = _client(tmp_path)
    (tmp_path / "console" / "chunk-AB12CD34.js").write_text("export const a = 1;" * 50)
    chunk = client.get("/static/console/chunk-AB12CD34.js", headers={"Accept-Encoding": "gzip"})
    assert chunk.status_code == 200 and chunk.text == "export const a = 1;" * 50
    assert chunk.headers["content-encoding"] == "gzip" and chunk.headers["vary"] == "Accept-Encoding"
    assert "immutable" in chunk.headers["cache-control"]
    plain = client.get("/static/console/console.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.headers["cache-control"] == "no-cache"
    # Only the bundle's own names, and only files that exist.
    assert client.get("/static/console/chunk-NOPE1234.js").status_code == 404
    assert client.get("/static/console/..%2Fsecret.js").status_code == 404


def test_the_preview_frame_has_its_own_policy(tmp_path: Path) -> None:
    client = _client(tmp_path)
    assert "frame-src 'self'" in client.get("/").headers["content-security-policy"]
    frame = client.get("/static/console/preview.html")
    csp = frame.headers["content-security-policy"]
    # Email HTML keeps its inline styles and images; no script runs but the frame's own (by hash), and it
    # connects nowhere and may be framed by the console only.
    assert "style-src 'unsafe-inline'" in csp and "script-src 'sha256-" in csp and "connect-src" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    assert "DOMParser" in frame.text
