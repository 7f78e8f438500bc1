"""The port between the providers that sign mail (smtp, outbox) and the workspaces' sending domains.

A provider asks, once per batch and per (workspace, From domain), which keys sign that mail; the answer comes
from memory between refreshes, so the per-message path costs a dictionary lookup and no database read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

DkimAlgorithm = Literal["rsa-sha256", "ed25519-sha256"]


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A key to sign with: what the DKIM-Signature names (d=, s=, a=) and the private key (PEM)."""

    domain: str
    selector: str
    algorithm: DkimAlgorithm
    private_key_pem: bytes = field(repr=False)


class DkimKeyring(Protocol):
    async def keys_for(self, workspace_id: int, from_domain: str) -> Sequence[DkimKey]:
        """The keys of the workspace's verified sending domain that covers ``from_domain`` (the domain itself,
        else its closest parent: DMARC's relaxed alignment accepts a parent's signature), RSA first; empty
        when there is none, and the provider falls back to its own signer."""
        ...
