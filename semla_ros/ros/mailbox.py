"""A one-slot mailbox between the image callback and the inference thread.

Why one slot: a camera at 30 Hz in front of a model at 5 Hz must not build a queue; the model should
always see the newest frame and the age of what we publish must stay bounded. `put` never blocks
(the callback returns at once); a frame that is replaced before anyone took it is counted as stale.
"""
from __future__ import annotations

import threading
from typing import Any


class LatestFrameMailbox:
    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self.replaced = 0  # frames overwritten before the inference thread took them

    def put(self, item: Any) -> bool:
        """Store `item`, replacing any untaken one; return True if one was replaced."""
        with self._cond:
            replaced = self._full
            if replaced:
                self.replaced += 1
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """Newest item, waiting up to `timeout` s; None on timeout or once closed."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake any waiter and refuse further items (shutdown)."""
        with self._cond:
            self._closed = True
            self._item, self._full = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
