"""EmbeddingScheduler: which frame the navigator embeds, and the one embedding job in flight.

Which frame is due follows the cadence (core/embedding_cadence.py: dense while the decision moves, backing
off while it is still). The navigator runs on its own worker so a frame never waits for it: a due frame is
handed over only while no job is in flight (a frame arriving while the navigator is busy is not embedded), and the
finished embedding is collected on a later frame (at once with an inline executor). Time running
backwards (a bag looping) starts a new epoch: a job from before the jump is dropped when it finishes.
A navigator failure never costs a mask: it is counted, reported once, and the next due frame retries.
"""
from __future__ import annotations

import math
import traceback
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass

import numpy as np

from .embedding_cadence import EmbeddingCadence


@dataclass(frozen=True)
class EmbeddingJob:
    """A frame handed to the navigator: its embedding is fed to the debouncer at the frame's time, unless
    time ran back (a new epoch) while it was in flight."""

    future: Future
    stamp: object
    time_s: float
    epoch: int
    image: np.ndarray


class EmbeddingScheduler:
    """`executor` runs the navigator (None: a private worker thread, shut down by `close`)."""

    def __init__(self, navigator, executor: Executor | None = None):
        self.navigator = navigator
        self._own_executor = executor is None
        self._executor = executor if executor is not None else ThreadPoolExecutor(
            1, thread_name_prefix="semla-navigator")
        self._job: EmbeddingJob | None = None      # the frame being embedded
        self._since = -1                           # frames segmented since the last hand-over (-1: none yet)
        self.cadence = EmbeddingCadence()
        self._epoch = 0                            # bumped when time runs backwards
        self._last_time = -math.inf
        self._time_resets = 0
        self._errors = 0
        self._error: str | None = None             # collected, not yet reported

    @property
    def time_resets(self) -> int:
        return self._time_resets

    @property
    def errors(self) -> int:
        return self._errors

    def advance(self, now: float) -> bool:
        """A frame at time `now`: True when time ran backwards (a new epoch; jobs in flight mean nothing now)."""
        restarted = now < self._last_time
        if restarted:
            self._epoch += 1
            self._time_resets += 1
            self.cadence.reset()
        self._last_time = now
        return restarted

    def segmented(self) -> None:
        """A frame got its mask: the next one is one further in the cadence."""
        if self._since >= 0:
            self._since += 1

    def start_if_due(self, image_rgb, stamp, now: float, every_n: int, rest_every_n: int,
                     urgent: bool = False) -> bool:
        """Hand this frame to the navigator if it is due (the cadence's interval since the last hand-over, the
        first frame, or `urgent`) and none is in flight."""
        if self.navigator is None:
            raise ValueError("a library needs a navigator to embed frames (none was given)")
        interval = self.cadence.interval(every_n, rest_every_n)
        if self._job is not None or not (self._since < 0 or self._since >= interval or urgent):
            return False
        future = self._executor.submit(self.navigator.embed, [image_rgb])
        self._job = EmbeddingJob(future, stamp, now, self._epoch, image_rgb)
        self._since = 0
        return True

    def collect(self) -> tuple[np.ndarray, EmbeddingJob] | None:
        """The finished embedding of this epoch and its frame (None: none is ready, it failed, or time ran back)."""
        job = self._job
        if job is None or not job.future.done():
            return None
        self._job = None
        try:
            embedding = np.asarray(job.future.result()[0], dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(embedding)):
                raise ValueError("the navigator's embedding contains NaN or inf")
        except Exception as exc:
            self._errors += 1
            self._error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return None
        if job.epoch != self._epoch:
            return None
        return embedding, job

    def wait(self) -> None:
        """Block until the embedding in flight, if any, has finished (it is still collected on a later frame)."""
        job = self._job
        if job is not None:
            futures_wait([job.future])

    def take_error(self) -> str | None:
        """The navigator's newest failure, once."""
        error, self._error = self._error, None
        return error

    def close(self) -> None:
        if self._own_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
