"""Automatic Persisted Queries, Apollo's protocol: a client sends the SHA-256 of its query instead of the text.

A request carries `extensions.persistedQuery = {"version": 1, "sha256Hash": "<64 hex digits>"}`:
- without `query`: a known hash runs the text stored under it; an unknown one is answered (HTTP 200, as Apollo
  clients expect) with the GraphQL error `PersistedQueryNotFound`, code PERSISTED_QUERY_NOT_FOUND, and the
  client sends the request again with the query;
- with `query`: the query's SHA-256 must be the hash (else HTTP 400, PERSISTED_QUERY_HASH_MISMATCH); the text
  is stored under it, then run.

Only authenticated requests get this far, so only holders of an API key store texts. The store lives in the
process, bounded in entries and characters, and is lost on restart: a client then pays one extra round trip
per query and process. Sharing it through Redis was not worth it: a Redis GET (a round trip on every request)
costs about what it saves, since a text found here is parsed and validated once per process anyway
(emailkit.schema.documents).
"""

from __future__ import annotations

import hashlib
import re

from emailkit.boundedcache import BoundedLRU

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
HASH_MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"
INVALID = "PERSISTED_QUERY_INVALID"

MAX_ENTRIES = 2000
MAX_CHARS = 4 * 1024 * 1024
# A longer text is run but not stored (a client then sends it in full each time, after a miss).
MAX_QUERY_CHARS = 64 * 1024

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class PersistedQueryError(Exception):
    def __init__(self, message: str, code: str, status_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = status_code


class PersistedQueries:
    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_chars: int = MAX_CHARS,
        max_query_chars: int = MAX_QUERY_CHARS,
    ) -> None:
        self._texts: BoundedLRU[str, str] = BoundedLRU(max_entries=max_entries, max_weight=max_chars)
        self.max_query_chars = max_query_chars

    def __len__(self) -> int:
        return len(self._texts)

    def resolve(self, query: str | None, extension: object) -> str:
        """The query text to run for a request carrying `extension` (its `persistedQuery`), or the refusal."""
        if not isinstance(extension, dict):
            raise PersistedQueryError("`extensions.persistedQuery` must be an object", INVALID, 400)
        if extension.get("version") != 1:
            raise PersistedQueryError("PersistedQueryNotSupported", NOT_SUPPORTED, 400)
        digest = extension.get("sha256Hash")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise PersistedQueryError(
                "`persistedQuery.sha256Hash` must be 64 hexadecimal digits", INVALID, 400
            )
        digest = digest.lower()
        if query is None:
            stored = self._texts.get(digest)
            if stored is None:
                raise PersistedQueryError("PersistedQueryNotFound", NOT_FOUND, 200)
            return stored
        if hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest() != digest:
            raise PersistedQueryError(
                "The query's SHA-256 is not `persistedQuery.sha256Hash`", HASH_MISMATCH, 400
            )
        if len(query) <= self.max_query_chars:
            self._texts.put(digest, query, len(query))
        return query
