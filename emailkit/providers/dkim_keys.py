"""Which DKIM signatures a message gets: its From domain's, when its workspace has that domain verified, else
the environment's signer (EMAILKIT_DKIM_*), else none.

The keyring is asked once per batch for each (workspace, From domain) the batch holds (a campaign's batch holds
one) and answers from memory between refreshes; signers are built once per key. A message then costs a
dictionary lookup on top of the signatures themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from emailkit.domain.ports.dkim import DkimKey, DkimKeyring
from emailkit.domain.ports.provider import OutgoingMessage
from emailkit.providers.dkim import DkimKeyError, DkimSigner

log = logging.getLogger(__name__)

# Signers kept per key: far more than the sending domains one process signs for.
_MAX_SIGNERS = 512

Signers = tuple[DkimSigner, ...]


def from_domain(message: OutgoingMessage) -> str:
    return message.from_.email.rpartition("@")[2].lower()


class BatchSigners:
    """The signers of one batch's messages."""

    def __init__(self, default: Signers, by_domain: dict[tuple[int, str], Signers]) -> None:
        self._default = default
        self._by_domain = by_domain

    def of(self, message: OutgoingMessage) -> Signers:
        if self._by_domain and message.workspace_id is not None:
            found = self._by_domain.get((message.workspace_id, from_domain(message)))
            if found:
                return found
        return self._default

    def sign(self, message: OutgoingMessage, data: bytes) -> bytes:
        # Each signer prepends its DKIM-Signature; neither covers the other's (DKIM-Signature is not in h=).
        for signer in self.of(message):
            data = signer.sign(data)
        return data


class MessageSigning:
    def __init__(self, fallback: DkimSigner | None = None, keyring: DkimKeyring | None = None) -> None:
        self._default: Signers = (fallback,) if fallback is not None else ()
        self._keyring = keyring
        self._signers: dict[DkimKey, DkimSigner] = {}

    @property
    def fallback(self) -> DkimSigner | None:
        return self._default[0] if self._default else None

    async def for_batch(self, messages: Sequence[OutgoingMessage]) -> BatchSigners:
        if self._keyring is None:
            return BatchSigners(self._default, {})
        wanted = {(m.workspace_id, from_domain(m)) for m in messages if m.workspace_id is not None}
        found: dict[tuple[int, str], Signers] = {}
        for workspace_id, domain in wanted:
            assert workspace_id is not None
            keys = await self._keyring.keys_for(workspace_id, domain)
            signers = tuple(s for s in (self._signer(k) for k in keys) if s is not None)
            if signers:
                found[(workspace_id, domain)] = signers
        return BatchSigners(self._default, found)

    def _signer(self, key: DkimKey) -> DkimSigner | None:
        signer = self._signers.get(key)
        if signer is None:
            try:
                signer = DkimSigner(key.domain, key.selector, key.private_key_pem)
            except DkimKeyError as exc:
                # The keyring only hands out keys it generated; one that does not load signs nothing rather
                # than failing the mail.
                log.warning("DKIM key of %s (selector %s) unusable: %s", key.domain, key.selector, exc)
                return None
            if len(self._signers) >= _MAX_SIGNERS:
                self._signers.clear()
            self._signers[key] = signer
        return signer
