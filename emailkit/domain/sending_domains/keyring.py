"""The keyring: which DKIM keys sign a workspace's mail From a domain (``ports.dkim.DkimKeyring``).

Each workspace's verified domains are read once and kept in memory; a provider asks once per batch. The entry is
read again after ``refresh_seconds`` (other processes' changes: a domain verified or deleted through the API
process signs, or stops signing, in the workers within that time) and at once after a change made in this
process (``changes.invalidate``, called by the API after a create, delete or check). A workspace without
sending domains costs one small read per refresh, not one per message.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.sending_domains import SendingDomain
from emailkit.domain.ports.dkim import DkimKey
from emailkit.domain.sealing import SecretUnreadable
from emailkit.domain.sending_domains import keys
from emailkit.domain.sending_domains.names import ascii_domain, parents

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 5.0


class KeyringChanges:
    """Process-wide marks of "this workspace's sending domains changed": every keyring of the process (the API's,
    the embedded worker's) reads a marked workspace again on its next use."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._marks: dict[int, int] = {}

    def invalidate(self, workspace_id: int) -> None:
        self._marks[workspace_id] = next(self._counter)

    def mark(self, workspace_id: int) -> int:
        return self._marks.get(workspace_id, 0)


changes = KeyringChanges()


@dataclass(frozen=True)
class _Entry:
    loaded_at: float
    mark: int
    by_domain: dict[str, tuple[DkimKey, ...]]


class SendingDomainKeyring:
    def __init__(
        self,
        db: Database,
        instance_secret: str,
        *,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._secret = instance_secret
        self._refresh = refresh_seconds
        self._clock = clock
        self._entries: dict[int, _Entry] = {}
        # Unsealing derives a key (HKDF) and decrypts: done once per sealed key, not at every refresh.
        self._unsealed: dict[str, bytes | None] = {}

    async def keys_for(self, workspace_id: int, from_domain: str) -> Sequence[DkimKey]:
        domain = ascii_domain(from_domain)
        if domain is None:
            return ()
        entry = self._entries.get(workspace_id)
        if entry is None or self._stale(workspace_id, entry):
            entry = await self._load(workspace_id)
        if not entry.by_domain:
            return ()
        for candidate in parents(domain):
            found = entry.by_domain.get(candidate)
            if found:
                return found
        return ()

    def _stale(self, workspace_id: int, entry: _Entry) -> bool:
        return entry.mark != changes.mark(workspace_id) or self._clock() - entry.loaded_at >= self._refresh

    async def _load(self, workspace_id: int) -> _Entry:
        mark = changes.mark(workspace_id)
        loaded_at = self._clock()
        with workspace_scope(workspace_id):
            async with self._db.session() as session:
                rows = (
                    await session.execute(
                        select(
                            SendingDomain.domain,
                            SendingDomain.selector,
                            SendingDomain.private_key_sealed,
                            SendingDomain.ed25519_selector,
                            SendingDomain.ed25519_private_key_sealed,
                        ).where(SendingDomain.workspace_id == workspace_id, SendingDomain.verified.is_(True))
                    )
                ).all()
        by_domain: dict[str, tuple[DkimKey, ...]] = {}
        for domain, selector, sealed, ed_selector, ed_sealed in rows:
            found = []
            rsa_pem = self._unseal(sealed, domain)
            if rsa_pem is not None:
                found.append(DkimKey(domain, selector, "rsa-sha256", rsa_pem))
            if ed_selector and ed_sealed:
                ed_pem = self._unseal(ed_sealed, domain)
                if ed_pem is not None:
                    found.append(DkimKey(domain, ed_selector, "ed25519-sha256", ed_pem))
            by_domain[domain] = tuple(found)
        entry = _Entry(loaded_at, mark, by_domain)
        self._entries[workspace_id] = entry
        return entry

    def _unseal(self, sealed: str, domain: str) -> bytes | None:
        if sealed not in self._unsealed:
            try:
                self._unsealed[sealed] = keys.unseal(sealed, self._secret).encode("ascii")
            except SecretUnreadable:
                log.warning(
                    "the DKIM key of sending domain %s cannot be read with this EMAILKIT_SECRET_KEY (was the "
                    "key changed?): its mail is not signed with it; delete the domain and create it again",
                    domain,
                )
                self._unsealed[sealed] = None
        return self._unsealed[sealed]
