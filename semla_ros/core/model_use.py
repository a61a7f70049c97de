"""ModelUse: forwards share the model, a change to it waits for them.

Why: a node with several inference workers runs the forwards of different batches side by side on one model
(the network is only read), while a fusion swap or a new vocabulary writes the model's weights and text
embeddings in place. A forward must never see half-written weights, and a batch's frames must all be segmented
by the model its results name. `threading` has no reader-writer lock, so this is one, preferring the change: once
a change waits, no new forward starts, so a stream of forwards cannot starve a swap.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class ModelUse:
    def __init__(self):
        self._condition = threading.Condition()
        self._forwards = 0        # forwards holding the model now
        self._changing = False    # a change holds the model, or waits for the forwards to finish

    @property
    def forwards(self) -> int:
        return self._forwards

    def share(self) -> None:
        """Start a forward: waits while a change holds or waits for the model. Pair with `unshare`."""
        with self._condition:
            while self._changing:
                self._condition.wait()
            self._forwards += 1

    def unshare(self) -> None:
        with self._condition:
            if self._forwards <= 0:
                raise RuntimeError("unshare() without share()")
            self._forwards -= 1
            if self._forwards == 0:
                self._condition.notify_all()

    @contextmanager
    def change(self) -> Iterator[None]:
        """Hold the model alone: after the forwards running now finish, before any new one starts. A thread
        holding a share must not ask for a change (it would wait for itself)."""
        with self._condition:
            while self._changing:
                self._condition.wait()
            self._changing = True
            while self._forwards:
                self._condition.wait()
        try:
            yield
        finally:
            with self._condition:
                self._changing = False
                self._condition.notify_all()
