"""Counters and timings of the node, and their /diagnostics message.

Why here and not in the node: the callback thread, the inference thread and the diagnostics timer
all write or read these numbers; one small lock-protected object keeps that consistent, and the
diagnostics text (what an operator reads in rqt_runtime_monitor) is built in one place.
"""
from __future__ import annotations

import collections
import math
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

TIMINGS = ("conversion_ms", "queue_ms", "model_ms", "process_ms", "publish_ms", "latency_ms",
           "overhead_ms")


class RollingWindow:
    """(time, value) samples of the last `seconds`; mean / max / rate over them."""

    def __init__(self, seconds: float = 5.0, maxlen: int = 2000):
        self.seconds = seconds
        self._samples: collections.deque = collections.deque(maxlen=maxlen)

    def add(self, value: float = 1.0, now: float | None = None) -> None:
        self._samples.append((time.monotonic() if now is None else now, value))

    def _recent(self, now: float | None):
        now = time.monotonic() if now is None else now
        return [v for t, v in self._samples if now - t <= self.seconds]

    def mean(self, now: float | None = None) -> float:
        values = self._recent(now)
        return sum(values) / len(values) if values else math.nan

    def max(self, now: float | None = None) -> float:
        values = self._recent(now)
        return max(values) if values else math.nan

    def rate(self, now: float | None = None) -> float:
        return len(self._recent(now)) / self.seconds


class NodeStats:
    """Everything /diagnostics reports; safe to update from any thread."""

    def __init__(self, window_s: float = 5.0):
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.not_ready = 0
        self.publish_errors = 0
        self.overlays_published = 0
        self.bad: collections.Counter = collections.Counter()
        self.callback_errors: collections.Counter = collections.Counter()  # unexpected exceptions, by callback
        self.input_window = RollingWindow(window_s)
        self.output_window = RollingWindow(window_s)
        self.timings = {name: RollingWindow(window_s) for name in TIMINGS}
        self.totals = {name: 0.0 for name in TIMINGS}  # sums since start, for benchmarks
        self.engine: dict[str, str] = {}  # last engine figures (support, adapters, swaps, ...)
        # Per camera (a node serving several): frames received, processed and bad.
        self.cameras: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def frame_received(self, camera: str = "") -> None:
        with self._lock:
            self.received += 1
            self.cameras[camera]["received"] += 1
            self.input_window.add()

    def bad_frame(self, kind: str, camera: str = "") -> None:
        with self._lock:
            self.bad[kind] += 1
            self.cameras[camera]["bad"] += 1

    def callback_error(self, name: str) -> int:
        """Count an unexpected exception in callback `name`; return its count so far."""
        with self._lock:
            self.callback_errors[name] += 1
            return self.callback_errors[name]

    def frame_not_ready(self) -> None:
        with self._lock:
            self.not_ready += 1

    def frame_processed(self, camera: str = "", **timings_ms: float) -> None:
        with self._lock:
            self.processed += 1
            self.cameras[camera]["processed"] += 1
            self.output_window.add()
            for name, value in timings_ms.items():
                self.timings[name].add(value)
                self.totals[name] += value

    def set_engine(self, **values) -> None:
        with self._lock:
            self.engine.update({k: str(v) for k, v in values.items()})

    @property
    def bad_total(self) -> int:
        with self._lock:
            return sum(self.bad.values())

    def camera_values(self, stale_by_camera: dict[str, int]) -> list[tuple[str, str]]:
        """`camera_<label>_frames_received|processed|bad|dropped_stale` for each camera (labels as given)."""
        with self._lock:
            counts = {camera: dict(self.cameras.get(camera, {})) for camera in stale_by_camera}
        return [(f"camera_{camera}_{key}", str(value)) for camera, stale in stale_by_camera.items()
                for key, value in (("frames_received", counts[camera].get("received", 0)),
                                   ("frames_processed", counts[camera].get("processed", 0)),
                                   ("frames_bad", counts[camera].get("bad", 0)),
                                   ("frames_dropped_stale", stale))]

    def values(self, stale_frames: int) -> list[tuple[str, str]]:
        with self._lock:
            rows = [
                ("input_rate_hz", f"{self.input_window.rate():.2f}"),
                ("output_rate_hz", f"{self.output_window.rate():.2f}"),
                ("frames_received", str(self.received)),
                ("frames_processed", str(self.processed)),
                ("frames_dropped_stale", str(stale_frames)),
                ("frames_dropped_not_ready", str(self.not_ready)),
                ("frames_bad", str(sum(self.bad.values()))),
            ]
            rows += [(f"frames_bad_{kind}", str(n)) for kind, n in sorted(self.bad.items())]
            for name in TIMINGS:
                rows.append((f"{name}_mean", f"{self.timings[name].mean():.2f}"))
                rows.append((f"{name}_max", f"{self.timings[name].max():.2f}"))
            if self.processed:
                rows += [(f"{name}_mean_since_start", f"{self.totals[name] / self.processed:.3f}")
                         for name in TIMINGS]
            rows.append(("publish_errors", str(self.publish_errors)))
            rows.append(("overlays_published", str(self.overlays_published)))
            rows.append(("callback_errors", str(sum(self.callback_errors.values()))))
            rows += [(f"callback_errors_{name}", str(n)) for name, n in sorted(self.callback_errors.items())]
            rows += sorted(self.engine.items())
            return rows


class Health:
    """The node's state per source (parameters, model, backend, navigator, library, ...): each source
    holds its own level and messages, replaced as a whole when that source is re-evaluated, so
    fixing one problem clears exactly its messages. Safe to use from any thread."""

    LEVELS = {"ok": 0, "warn": 1, "error": 2}

    def __init__(self):
        self._lock = threading.Lock()
        self._sources: dict[str, list[tuple[str, str]]] = {}   # source -> [(level, message)]

    def set(self, source: str, entries: list[tuple[str, str]]) -> None:
        """Replace a source's (level, message) entries; levels are 'ok', 'warn', 'error'."""
        for level, _ in entries:
            if level not in self.LEVELS:
                raise ValueError(f"unknown health level {level!r}")
        with self._lock:
            self._sources[source] = list(entries)

    def worst(self) -> tuple[str, str]:
        """(level, message) of the most severe entry, latest source first among equals; ('ok', '') if none."""
        with self._lock:
            entries = [e for source in reversed(list(self._sources)) for e in reversed(self._sources[source])]
        if not entries:
            return "ok", ""
        return max(entries, key=lambda e: self.LEVELS[e[0]])

    def rows(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(f"{level}_{source}_{i}", message) for source, entries in self._sources.items()
                    for i, (level, message) in enumerate(entries) if level != "ok"]


def diagnostic_array(stamp, name: str, level: bytes, message: str,
                     rows: list[tuple[str, str]]) -> DiagnosticArray:
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id="semla_ros")
    status.values = [KeyValue(key=k, value=v) for k, v in rows]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
LEVEL_BYTES = {"ok": OK, "warn": WARN, "error": ERROR}
