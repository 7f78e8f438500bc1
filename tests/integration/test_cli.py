"""The `emailkit` command, run as a user would: a subprocess with its own working directory and environment.

PostgreSQL variants use a scratch database (see test_migrations) so that dropping and migrating it never
disturbs the database the other suites share.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain import apikeys
from emailkit.domain.apikeys import Principal
from emailkit.schema import build_schema
from tests.integration.test_migrations import create_scratch_database, drop_scratch_database
from tests.support.environment import APP_ROLE, BACKENDS, PG_URL, TEST_SECRET

EMAILKIT = Path(sys.executable).with_name("emailkit")
TIMEOUT = 120


def emailkit(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EMAILKIT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@dataclass
class Env:
    cwd: Path
    vars: dict[str, str]
    database_url: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return emailkit(self.cwd, self.vars, *args)


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILKIT_")}
    env["EMAILKIT_DATA_DIR"] = str(tmp_path / "data")
    env["EMAILKIT_OUTBOX_DIR"] = str(tmp_path / "outbox")
    # The banner as a person reads it (test_log_lines covers EMAILKIT_LOG_FORMAT=json).
    env["EMAILKIT_LOG_FORMAT"] = "console"
    return env


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    base = _base_env(tmp_path)
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
        yield Env(tmp_path, {**base, "EMAILKIT_DATABASE_URL": url}, url)
        return
    assert PG_URL is not None
    url = asyncio.run(create_scratch_database(PG_URL, owner=APP_ROLE))
    try:
        yield Env(
            tmp_path,
            {**base, "EMAILKIT_DATABASE_URL": url, "EMAILKIT_SECRET_KEY": TEST_SECRET},
            url,
        )
    finally:
        asyncio.run(drop_scratch_database(PG_URL, url))


def authenticate(url: str, key: str) -> Principal | None:
    async def run() -> Principal | None:
        db = Database(url)
        try:
            async with db.session() as session:
                return await apikeys.authenticate(session, key)
        finally:
            await db.dispose()

    return asyncio.run(run())


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_create_api_key_prints_the_key_last(env: Env) -> None:
    if not env.database_url.startswith("sqlite"):
        # PostgreSQL is never migrated behind the operator's back.
        refused = env.run("create-api-key", "--name", "ops", "--role", "admin")
        assert_one_line_error(refused, "pending migrations", "emailkit migrate")
        migrated = env.run("migrate")
        assert migrated.returncode == 0, migrated.stderr

    result = env.run("create-api-key", "--name", "ops", "--role", "admin")
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"ek_[A-Za-z0-9_-]{40,}", key), result.stdout
    assert key not in result.stderr
    principal = authenticate(env.database_url, key)
    assert principal is not None
    assert (principal.name, principal.role) == ("ops", Role.ADMIN)

    editor = env.run("create-api-key", "--name", "cms", "--role", "EDITOR")
    editor_key = editor.stdout.splitlines()[-1]
    assert editor_key != key
    principal = authenticate(env.database_url, editor_key)
    assert principal is not None and principal.role is Role.EDITOR


def test_create_api_key_rejects_bad_input(tmp_path: Path) -> None:
    env = _base_env(tmp_path)
    env["EMAILKIT_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    blank = emailkit(tmp_path, env, "create-api-key", "--name", "  ")
    assert blank.returncode != 0 and blank.stdout == ""
    assert blank.stderr.splitlines()[-1] == "error: Name is required"
    assert "Traceback" not in blank.stderr
    bad_role = emailkit(tmp_path, env, "create-api-key", "--name", "x", "--role", "root")
    assert bad_role.returncode != 0 and bad_role.stdout == ""


def test_export_schema(tmp_path: Path) -> None:
    expected = build_schema().as_str() + "\n"
    env = _base_env(tmp_path)
    printed = emailkit(tmp_path, env, "export-schema")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == expected
    written = emailkit(tmp_path, env, "export-schema", "-o", "out.graphql")
    assert written.returncode == 0 and written.stdout == ""
    assert (tmp_path / "out.graphql").read_text() == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMAILKIT_PUBLIC_URL", "foo"),
        ("EMAILKIT_DATABASE_URL", "mysql://x"),
        ("EMAILKIT_BROKER_URL", "kafka://queue"),
        ("EMAILKIT_PROVIDER", "pigeon"),
        ("EMAILKIT_MAX_PAGE_SIZE", "many"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(tmp_path: Path, variable: str, value: str) -> None:
    result = emailkit(tmp_path, {**_base_env(tmp_path), variable: value}, "serve")
    assert_one_line_error(result, variable)
    assert result.stdout == ""
    # Nothing was created on the way to the error.
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("provider", "variable"),
    [
        ("smtp", "EMAILKIT_SMTP_URL"),
        ("sendgrid", "EMAILKIT_SENDGRID_API_KEY"),
        ("mailgun", "EMAILKIT_MAILGUN_API_KEY"),
        ("postmark", "EMAILKIT_POSTMARK_SERVER_TOKEN"),
    ],
)
def test_serve_refuses_a_provider_without_its_credentials(
    tmp_path: Path, provider: str, variable: str
) -> None:
    result = emailkit(tmp_path, {**_base_env(tmp_path), "EMAILKIT_PROVIDER": provider}, "serve")
    assert_one_line_error(result, variable)


@pytest.mark.parametrize("command", [["migrate"], ["create-api-key", "--name", "x"]])
def test_every_command_checks_the_settings(tmp_path: Path, command: list[str]) -> None:
    result = emailkit(tmp_path, {**_base_env(tmp_path), "EMAILKIT_PUBLIC_URL": "foo"}, *command)
    assert_one_line_error(result, "EMAILKIT_PUBLIC_URL", "'foo'")
    assert result.stdout == ""


def test_missing_secret_outside_embedded_mode(tmp_path: Path) -> None:
    env = {**_base_env(tmp_path), "EMAILKIT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    result = emailkit(tmp_path, env, "migrate")
    assert_one_line_error(result, "EMAILKIT_SECRET_KEY")


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    password, secret = "pw-hunter2-pw", "sk-0123456789-abcdef-sk"
    base = _base_env(tmp_path)
    cases = [
        # Too short a secret key: the error names the variable, never the value.
        {"EMAILKIT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "EMAILKIT_SECRET_KEY": "sk-short"},
        # A rejected URL with a password in it.
        {"EMAILKIT_DATABASE_URL": f"mysql://mailer:{password}@db/mail", "EMAILKIT_SECRET_KEY": secret},
        {"EMAILKIT_BROKER_URL": f"http://:{password}@queue", "EMAILKIT_SECRET_KEY": secret},
        # A valid URL whose server is unreachable.
        {
            "EMAILKIT_DATABASE_URL": f"postgresql://mailer:{password}@127.0.0.1:1/mail",
            "EMAILKIT_SECRET_KEY": secret,
        },
    ]
    for extra in cases:
        result = emailkit(tmp_path, {**base, **extra}, "serve", "--port", str(_free_port()))
        assert_one_line_error(result, "EMAILKIT_")
        output = result.stdout + result.stderr
        for hidden in (password, secret, "sk-short"):
            assert hidden not in output, output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_healthy(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"serve did not become healthy:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code (killing it and failing if it does not stop within 30 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_serve_and_migrations(env: Env) -> None:
    port = _free_port()
    is_sqlite = env.database_url.startswith("sqlite")
    if not is_sqlite:
        refused = env.run("serve", "--port", str(port))
        assert_one_line_error(refused, "pending migrations", "emailkit migrate", "--migrate")

    if not is_sqlite:
        # Trust authentication ignores it; the banner must still hide it.
        env.vars["EMAILKIT_DATABASE_URL"] = env.database_url.replace("postgres@", "postgres:pw-secret-7@")
    # SQLite (the embedded default) migrates itself; PostgreSQL only when asked to.
    args = ["serve", "--port", str(port)] + ([] if is_sqlite else ["--migrate"])
    log = env.cwd / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(EMAILKIT), *args], cwd=env.cwd, env=env.vars, stdout=out, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(proc, base_url, log)
        banner = _banner(log.read_text())
        assert banner["mode"] == ("embedded" if is_sqlite else "production")
        assert banner["broker"] == "in-process queue (no broker)"
        assert banner["provider"] == f"outbox, writing .eml files to {env.cwd / 'outbox'}"
        assert banner["public URL"] == "http://127.0.0.1:8000"
        assert banner["workers"] == "4 in-process worker threads (jobs run in this process)"
        assert banner["listening"] == f"http://127.0.0.1:{port} (GraphiQL at /graphql)"
        if is_sqlite:
            assert banner["database"] == env.database_url
        else:
            # The password given in the URL is never shown.
            assert banner["database"] == env.vars["EMAILKIT_DATABASE_URL"].replace(":pw-secret-7@", ":***@")
            assert "pw-secret-7" not in log.read_text()
        assert httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
        assert httpx.post(f"{base_url}/graphql", json={"query": "{ viewer { name } }"}).status_code == 401
        # The schema is in place: a key made now works against the running server.
        key = env.run("create-api-key", "--name", "live").stdout.splitlines()[-1]
        resp = httpx.post(
            f"{base_url}/graphql",
            json={"query": "{ viewer { name role } }"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert resp.json()["data"] == {"viewer": {"name": "live", "role": "ADMIN"}}
    finally:
        returncode = stop_server(proc)
    # A clean shutdown: uvicorn finishes serving and then re-raises the signal it caught.
    assert returncode in (0, -signal.SIGTERM), log.read_text()


def test_several_api_processes_need_a_broker(tmp_path: Path) -> None:
    result = emailkit(tmp_path, _base_env(tmp_path), "serve", "--workers", "2")
    assert_one_line_error(result, "--workers", "EMAILKIT_BROKER_URL")


def _banner(log: str) -> dict[str, str]:
    """The start-up banner's rows: the indented lines after `emailkit <version> <command>`."""
    lines = log.splitlines()
    [start] = [i for i, line in enumerate(lines) if re.fullmatch(r"emailkit \S+ (serve|worker)", line)]
    rows = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        name, _, value = line.strip().partition("  ")
        rows[name] = value.strip()
    return rows


@pytest.mark.parametrize("database", ["sqlite", "unreachable postgresql"])
def test_serve_on_a_port_in_use_stops_at_once_without_touching_the_database(
    tmp_path: Path, database: str
) -> None:
    env = _base_env(tmp_path)
    db_file = tmp_path / "never.db"
    if database == "sqlite":
        env["EMAILKIT_DATABASE_URL"] = f"sqlite:///{db_file}"
    else:
        # Nothing listens on port 1: reaching the database would be a different error.
        env["EMAILKIT_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/x"
        env["EMAILKIT_SECRET_KEY"] = TEST_SECRET
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = emailkit(tmp_path, env, "serve", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: port {port} on 127.0.0.1 is already in use (another emailkit serve?); stop that process or "
        "choose another with --port"
    )
    assert result.stdout == ""
    assert not db_file.exists()
    assert not (tmp_path / "outbox").exists()


def test_version(tmp_path: Path) -> None:
    result = emailkit(tmp_path, _base_env(tmp_path), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"emailkit {importlib.metadata.version('emailkit')}\n"


def test_help_has_no_type_placeholders_on_flags_nor_stray_spaces(tmp_path: Path) -> None:
    env = {**_base_env(tmp_path), "COLUMNS": "200", "TERM": "dumb"}
    for command in (["--help"], ["serve", "--help"], ["worker", "--help"]):
        result = emailkit(tmp_path, env, *command)
        assert result.returncode == 0, result.stderr
        assert "<bool>" not in result.stdout
        assert not re.search(r"\w \.", result.stdout), result.stdout
    worker_help = emailkit(tmp_path, env, "worker", "--help").stdout
    assert "Threads per process." in worker_help and "EMAILKIT_WORKER_THREADS" in worker_help
    assert "--version" in emailkit(tmp_path, env, "--help").stdout
