"""Run one job on a daemon thread of its own; its result or exception arrives through a Future.

Why not a ThreadPoolExecutor: the job may block for ever (a library reload reading a FIFO someone
left where a file should be). An executor's worker is joined at interpreter exit and would hold the
node's shutdown; a daemon thread never does, and a new job is not queued behind a stuck one.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any, Callable


class BackgroundJob:
    """One job at a time: `start` refuses while the previous one runs."""

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._future: Future | None = None
        self.started_at = float("nan")   # time.monotonic() of the running (or last) job's start
        self.what = ""                   # the running (or last) job's description

    @property
    def running(self) -> bool:
        with self._lock:
            return self._future is not None and not self._future.done()

    def start(self, what: str, function: Callable[..., Any], *args) -> Future | None:
        """Start `function(*args)`; None when a job is still running (nothing is started)."""
        with self._lock:
            if self._future is not None and not self._future.done():
                return None
            future: Future = Future()
            self._future, self.started_at, self.what = future, time.monotonic(), what

        def run():
            try:
                future.set_result(function(*args))
            except BaseException as error:  # delivered to whoever waits on the future
                future.set_exception(error)

        threading.Thread(target=run, name=self.name, daemon=True).start()
        return future
