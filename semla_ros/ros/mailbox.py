"""One-slot mailboxes between the image callbacks and the inference workers.

Why one slot: a camera at 30 Hz in front of a model at 5 Hz must not build a queue; the model should
always see the newest frame and the age of what we publish must stay bounded. `put` never blocks
(the callback returns at once); a frame that is replaced before anyone took it is counted as stale.

Why one slot per camera behind one condition (CameraMailboxes): a node serving several cameras waits for
whichever camera has a frame, and takes the newest frame of every camera that has one; a camera that stops
publishing has an empty slot and is simply not in the turn, so it never holds up the others.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable, Iterable


class CameraMailboxes:
    """A latest-frame slot per camera (`cameras`: their keys, in the order turns list them)."""

    def __init__(self, cameras: Iterable[Hashable]):
        self._cond = threading.Condition()
        self._slots: dict[Hashable, Any] = dict.fromkeys(cameras)
        self._full: dict[Hashable, bool] = dict.fromkeys(self._slots, False)
        self._closed = False
        self.replaced_by_camera: dict[Hashable, int] = dict.fromkeys(self._slots, 0)   # overwritten, untaken

    def put(self, camera: Hashable, item: Any) -> bool:
        """Store `item` in the camera's slot, replacing an untaken one; True if one was replaced. Refused
        (False) once closed."""
        with self._cond:
            if self._closed:
                return False
            replaced = self._full[camera]
            if replaced:
                self.replaced_by_camera[camera] += 1
            self._slots[camera], self._full[camera] = item, True
            self._cond.notify()
            return replaced

    def take_ready(self, timeout: float | None = None,
                   gather: Callable[[], bool] | None = None) -> list[tuple[Hashable, Any]]:
        """The newest item of every camera that has one, as (camera, item) in camera order, waiting up to
        `timeout` s for the first; [] on timeout or once closed.

        `gather`: after the first item, while it says so (an inference worker: another worker's forward still
        holds the cores), wait for every camera's item as well, up to `timeout` s more; woken by each `put` and
        by `nudge` (call it when what `gather` reads changes). A camera that stopped holds a turn up for that long
        at most, and only while there is nothing else the cores could do."""
        with self._cond:
            if not any(self._full.values()) and not self._closed:
                self._cond.wait(timeout)
            if gather is not None:
                deadline = None if timeout is None else time.monotonic() + timeout
                while (not self._closed and any(self._full.values()) and not all(self._full.values())
                       and gather()):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
            if self._closed:
                return []
            ready = [(camera, self._slots[camera]) for camera, full in self._full.items() if full]
            for camera, _ in ready:
                self._slots[camera], self._full[camera] = None, False
            return ready

    def nudge(self) -> None:
        """Wake a `take_ready` that gathers, to ask its `gather` again."""
        with self._cond:
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop the untaken items (not counted as replaced)."""
        with self._cond:
            for camera in self._slots:
                self._slots[camera], self._full[camera] = None, False

    def close(self) -> None:
        """Wake any waiter and refuse further items (shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def replaced(self) -> int:
        """Items overwritten before they were taken, all cameras together."""
        with self._cond:
            return sum(self.replaced_by_camera.values())


class LatestFrameMailbox:
    """The single-camera mailbox: CameraMailboxes with one slot."""

    def __init__(self):
        self._box = CameraMailboxes([None])

    def put(self, item: Any) -> bool:
        """Store `item`, replacing any untaken one; return True if one was replaced."""
        return self._box.put(None, item)

    def take(self, timeout: float | None = None) -> Any:
        """Newest item, waiting up to `timeout` s; None on timeout or once closed."""
        ready = self._box.take_ready(timeout)
        return ready[0][1] if ready else None

    def close(self) -> None:
        self._box.close()

    @property
    def closed(self) -> bool:
        return self._box.closed

    @property
    def replaced(self) -> int:
        return self._box.replaced
