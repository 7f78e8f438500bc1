"""A throw-away Dovecot (the Debian package dovecot-imapd) for the mailbox reader's tests.

Each server is its own ``dovecot -F`` process with a config in a temporary directory: one user from a
passwd-file, maildir mail there, plain IMAP and IMAPS (a self-signed certificate) on free loopback ports. It
never touches the system's Dovecot configuration or ports. Messages are delivered with IMAP APPEND.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient

from tests.integration.test_provider_smtp_security_and_url import self_signed

USER = "bounces@example.org"
PASSWORD = "s3cret-Mailbox-pw"
_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Dovecot:
    port: int
    tls_port: int
    cafile: Path
    log: Path

    def url(self, *, password: str = PASSWORD, query: str = "processed=Processed") -> str:
        return f"imap://{USER.replace('@', '%40')}:{password}@127.0.0.1:{self.port}/INBOX?tls=none&{query}"

    @contextmanager
    def client(self) -> Iterator[IMAPClient]:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=30)
        try:
            client.login(USER, PASSWORD)
            yield client
        finally:
            client.logout()

    def empty(self) -> None:
        """Back to an empty INBOX and no other folder (between tests sharing the server)."""
        with self.client() as client:
            for _, _, name in client.list_folders():
                if name != "INBOX":
                    client.delete_folder(name)
            client.select_folder("INBOX")
            client.delete_messages(client.search(["ALL"]))
            client.expunge()

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as client:
            client.append(folder, raw)

    def count(self, folder: str) -> int:
        with self.client() as client:
            if not client.folder_exists(folder):
                return 0
            return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])

    def messages(self, folder: str) -> list[bytes]:
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
            return [bytes(item[b"BODY[]"]) for _, item in sorted(data.items())]


def _binary() -> str | None:
    # /usr/sbin is not on every user's PATH.
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin")


def available() -> bool:
    return _binary() is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _config(root: Path, port: int, tls_port: int, cert: Path, key: Path) -> str:
    me = pwd.getpwuid(os.geteuid()).pw_name
    # As root, Dovecot runs its helpers as its own users and refuses mail access as uid 0; the Debian
    # package creates dovecot, dovenull (and mail exists everywhere).
    internal, login, mail = ("dovecot", "dovenull", "mail") if os.geteuid() == 0 else (me, me, me)
    mail_uid = pwd.getpwnam(mail).pw_uid
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Dovecot holds a refused login back 2 s against guessing; the wrong-password test needs no such patience.
auth_failure_delay = 0
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {mail_uid}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={pwd.getpwnam(mail).pw_gid} home={root}/home/%u
}}
"""


@contextmanager
def dovecot() -> Iterator[Dovecot]:
    # Not under pytest's tmp_path: that is private to root, and the mail user must reach its home.
    root = Path(tempfile.mkdtemp(prefix="emailkit-dovecot-"))
    root.chmod(0o755)
    try:
        _, cert = self_signed(root)
        (root / "key.pem").chmod(0o600)
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        home = root / "home"
        home.mkdir()
        if os.geteuid() == 0:
            mail = pwd.getpwnam("mail")
            os.chown(home, mail.pw_uid, mail.pw_gid)
        port, tls_port = _free_port(), _free_port()
        config = root / "dovecot.conf"
        config.write_text(_config(root, port, tls_port, cert, root / "key.pem"))
        log = root / "dovecot.log"
        binary = _binary()
        assert binary is not None, "dovecot is not installed"
        proc = subprocess.Popen(
            [binary, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(root / "stderr.log").open("wb"),
        )
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while not _listening(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (root / "stderr.log").read_text() + (log.read_text() if log.exists() else "")
                    raise RuntimeError(f"dovecot did not start (exit {proc.returncode}):\n{text}")
                time.sleep(0.05)
            yield Dovecot(port=port, tls_port=tls_port, cafile=cert, log=log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=_START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
