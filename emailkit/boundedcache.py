"""An in-process LRU bounded both in entries and in total weight (what its values cost in memory).

Callers that keep what clients send (query texts, parsed documents) must bound it by size, not only by count:
one parsed document of 3,000 tokens takes about 1.8 MB, a typical one 20-50 KB. Not thread-safe: each cache
belongs to one event loop, where no two callers interleave within a method.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    def __init__(self, *, max_entries: int, max_weight: int) -> None:
        self.max_entries = max_entries
        self.max_weight = max_weight
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        return self._weight

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, weight: int) -> bool:
        """Keep `value` (evicting the least recently used); False when it alone weighs more than the bound."""
        if weight > self.max_weight or self.max_entries <= 0:
            return False
        self.discard(key)
        self._items[key] = (value, weight)
        self._weight += weight
        while len(self._items) > self.max_entries or self._weight > self.max_weight:
            _, (_, dropped) = self._items.popitem(last=False)
            self._weight -= dropped
        return True

    def discard(self, key: K) -> None:
        found = self._items.pop(key, None)
        if found is not None:
            self._weight -= found[1]

    def clear(self) -> None:
        self._items.clear()
        self._weight = 0
