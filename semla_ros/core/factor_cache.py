"""An LRU cache of adapter factors, bounded in megabytes.

Why: a library of thousands of adapters cannot hold every adapter's factors in memory (8 MB each
for CAT-Seg ViT-B/16, 14 MB for ViT-L/14), yet a swap fuses only K of them. Entries read their
factors from disk on first use and keep them here; the least recently used are dropped when
the bound is reached. One cache serves a library and the snapshots `reload()` makes of it, so
adapters whose files did not change stay cached across a reload.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable

MB = 1 << 20


@dataclass(frozen=True)
class CacheStats:
    max_bytes: int
    bytes: int
    items: int
    hits: int
    misses: int
    evictions: int


class FactorCache:
    """key -> (value, nbytes), least recently used first out; thread-safe, loads run outside the lock."""

    def __init__(self, max_mb: float):
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = self._hits = self._misses = self._evictions = 0
        self._max_bytes = 0
        self.resize(max_mb)

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def resize(self, max_mb: float) -> None:
        """New bound (0: keep nothing); evicts at once down to it."""
        if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not max_mb >= 0:
            raise ValueError(f"cache size must be a number of MB >= 0, got {max_mb!r}")
        with self._lock:
            self._max_bytes = int(max_mb * MB)
            self._evict(0)

    def _evict(self, room: int) -> None:
        while self._items and self._bytes + room > self._max_bytes:
            _, (_, nbytes) = self._items.popitem(last=False)
            self._bytes -= nbytes
            self._evictions += 1

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: Hashable, load: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value, or `load()` -> (value, nbytes) stored when it fits the bound.

        A value larger than the whole bound is returned without being kept. Two threads missing
        the same key may both load it; the values are equal and one is kept.
        """
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self._hits += 1
                return item[0]
            self._misses += 1
        value, nbytes = load()
        with self._lock:
            if key not in self._items and nbytes <= self._max_bytes:
                self._evict(nbytes)
                self._items[key] = (value, nbytes)
                self._bytes += nbytes
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._max_bytes, self._bytes, len(self._items), self._hits, self._misses,
                              self._evictions)
