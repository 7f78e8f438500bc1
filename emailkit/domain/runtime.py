"""What the use cases need from the outside world, assembled once by a composition root."""

from __future__ import annotations

from dataclasses import dataclass

from emailkit.domain.db import Database


@dataclass
class Runtime:
    db: Database
    secret_key: str
    public_url: str
    max_page_size: int = 250
    debug: bool = False
