"""An import's progress: the counters saved on its row and the message of its live channel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from emailkit.db.tables.audience import Import, ImportStatus

FINAL_STATUSES: Final = frozenset({ImportStatus.FINISHED, ImportStatus.FAILED})


def progress_channel(import_id: int) -> str:
    return f"import:{import_id}:progress"


@dataclass
class ImportState:
    """What an import has done so far; the message of the live channel."""

    id: int
    status: ImportStatus
    total: int = 0
    processed: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    error: str | None = None
    # "reading" the file, "loading" it into the database; live messages only (not stored).
    phase: str = ""

    @classmethod
    def of(cls, row: Import) -> ImportState:
        return cls(
            id=row.id,
            status=row.status,
            total=row.total,
            processed=row.processed,
            inserted=row.inserted,
            updated=row.updated,
            skipped=row.skipped,
            failed=row.failed,
            error=row.error,
        )

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ImportState:
        return cls(
            id=int(message["id"]),
            status=ImportStatus(str(message["status"])),
            total=int(message["total"]),
            processed=int(message["processed"]),
            inserted=int(message["inserted"]),
            updated=int(message["updated"]),
            skipped=int(message["skipped"]),
            failed=int(message["failed"]),
            error=message.get("error") if isinstance(message.get("error"), str) else None,
            phase=str(message.get("phase") or ""),
        )

    def counters(self) -> dict[str, int]:
        """The counts, by the names the import row, the live message and the API share."""
        return {
            "total": self.total,
            "processed": self.processed,
            "inserted": self.inserted,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
        }

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            **self.counters(),
            "error": self.error,
            "phase": self.phase,
        }

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


ProgressCallback = Callable[[ImportState], Awaitable[None]]
