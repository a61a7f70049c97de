"""TurnOrder: several inference workers of one node, one model, frames published in order.

Why: with more than one inference thread (`inference_workers`), two turns are in flight at once. Taking the
cameras' newest frames and making their decisions must still happen one turn at a time, in the order the
frames arrived (the debouncer reads time running backwards as a looping bag), and a camera's masks must leave
in the order of its frames though a later turn's forward may finish first. Only the forwards run side by side.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator


def worker_count(requested: int, cameras: int) -> int:
    """`inference_workers` in force: the number asked for, or for 0 one per camera, at most the CPU cores."""
    if requested > 0:
        return requested
    return max(1, min(cameras, os.cpu_count() or 1))


def share_cores(workers: int) -> int:
    """Split the CPU cores between the workers' forwards (PyTorch's intra-op threads, one pool for the process):
    each worker's forward running on every core would oversubscribe them `workers` times. Returns the threads
    each forward gets now."""
    import torch  # the engine is built: torch is imported already

    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return threads


class TurnOrder:
    def __init__(self):
        self._taking = threading.Lock()
        self._order = threading.Condition()
        self._issued = 0      # tickets handed out (under `taking`)
        self._published = 0   # turns that have published, in ticket order

    @contextmanager
    def taking(self) -> Iterator[None]:
        """Held while a worker takes its frames and makes their decisions: one turn at a time."""
        with self._taking:
            yield

    def ticket(self) -> int:
        """This turn's place in the publishing order; call while `taking`. Every ticket must go through
        `publishing` (also when the turn failed), or the turns after it never publish."""
        ticket, self._issued = self._issued, self._issued + 1
        return ticket

    @contextmanager
    def publishing(self, ticket: int) -> Iterator[None]:
        """Waits until every earlier turn has published, then holds the publishing order until the block ends."""
        with self._order:
            while self._published != ticket:
                self._order.wait()
        try:
            yield
        finally:
            with self._order:
                self._published += 1
                self._order.notify_all()
