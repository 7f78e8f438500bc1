"""A private RabbitMQ virtual host on the machine's server, so a test's queues are its own.

The server is shared (CI and other runs use it too): a vhost per test keeps their messages apart, and
deleting it afterwards takes every queue and message with it.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit


def _ctl(*args: str) -> None:
    binary = shutil.which("rabbitmqctl")
    # Wanted (EMAILKIT_TEST_AMQP_URL is set) but missing is an error, never a skip.
    assert binary is not None, "rabbitmqctl is not installed (apt-get install rabbitmq-server)"
    subprocess.run([binary, "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def private_vhost(amqp_url: str) -> Iterator[str]:
    """Yield `amqp_url` pointed at a new vhost its user may use fully; the vhost is deleted afterwards."""
    parts = urlsplit(amqp_url)
    user = parts.username or "guest"
    vhost = f"emailkit-test-{uuid.uuid4().hex[:12]}"
    _ctl("add_vhost", vhost)
    try:
        _ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        _ctl("delete_vhost", vhost)
