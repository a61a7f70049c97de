"""Adaptation requests (`~/adapt_now`, a library reload) handed from service threads to the inference thread.

A request is acknowledged the moment it is put, so it must never be lost afterwards: putting and taking
are atomic under one small lock (never held while anything else runs), and a request is taken only by
the adaptation that serves it. Two requests before that adaptation merge into one, the stronger reason
winning (a reload also serves a manual request, not the other way round), and the fusion that serves a
request carries the request's reason even when a confirmed shift started it: the caller can see it served.
"""
from __future__ import annotations

import threading
from typing import Literal, get_args

RequestReason = Literal["manual", "reload"]
REQUESTS: tuple[str, ...] = get_args(RequestReason)   # strongest last


def merged(old: str | None, new: str | None) -> str | None:
    """The reason one adaptation reports when it serves both: a request beats "shift"/"startup", reload
    beats manual."""
    rank = {r: i + 1 for i, r in enumerate(REQUESTS)}
    if old is None:
        return new
    if new is None:
        return old
    return new if rank.get(new, 0) >= rank.get(old, 0) else old


class PendingRequest:
    """At most one pending request (merged); thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._reason: str | None = None

    def put(self, reason: str) -> None:
        if reason not in REQUESTS:
            raise ValueError(f"a request's reason must be one of {REQUESTS}, got {reason!r}")
        with self._lock:
            self._reason = merged(self._reason, reason)

    @property
    def pending(self) -> bool:
        return self._reason is not None

    def take(self) -> str | None:
        """The pending reason, cleared in the same step (None: nothing pending)."""
        with self._lock:
            reason, self._reason = self._reason, None
            return reason
