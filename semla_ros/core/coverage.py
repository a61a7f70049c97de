"""Library coverage: does the adapter library have an adapter for what the camera sees?

SemLA (supplementary E) asks the deployment to notice domains the library does not cover, from
frequent large embedding distances or low support, and to prompt training new adapters.

A frame is *uncovered* when its embedding lies farther from the nearest adapter centroid than
`max_relative_distance` times the library's median inter-centroid spacing (the library's own
scale: frames of a domain it covers sit well inside the spacing of its centroids), or when its
scale-free support (eq. 15 x spacing, `core.retrieval.scale_free_support`) is below
`min_scale_free_support` (0 switches that test off). One frame decides nothing: the status is
GAP only when at least `gap_fraction` of the last `window` embedded frames were uncovered,
GAP_SUSPECTED when at least `suspect_fraction` were, else COVERED.

While a gap is suspected or confirmed, uncovered frames are handed to a `GapCapture` at most
once per `capture_period_s` (rate limit), up to its size bound, so they can be labelled and
turned into an adapter (`semla-library gaps`, then `semla-library train`).
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import fields
from .capture import GapCapture
from .fields import setting
from .retrieval import Retrieval, retrieve
from .support import frame_support, relative_distance

# The values of semla_ros/msg/CoverageStatus's status constants.
COVERED, GAP_SUSPECTED, GAP = 0, 1, 2
STATUS_NAMES = ("covered", "gap_suspected", "gap")


@dataclass(frozen=True)
class CoverageSettings:
    """When a frame counts as uncovered, when a gap is sustained, what is captured (the one set of defaults)."""

    max_relative_distance: float = setting(
        0.5, low=1e-6, high=1e6,
        help="A frame is uncovered when its distance to the nearest adapter centroid exceeds this times the "
             "library's median centroid spacing")
    min_scale_free_support: float = setting(
        0.0, low=0.0, high=1e6, help="A frame is also uncovered when its scale-free support is below this (0 = off)",
        doc="Also uncovered below this scale-free support (eq. 15 x spacing); 0 switches this test off.")
    window: int = setting(20, low=1, high=10000, help="Embedded frames the uncovered share is taken over")
    suspect_fraction: float = setting(0.5, low=1e-6, high=1.0,
                                      help="Uncovered share of the window for GAP_SUSPECTED (<= gap_fraction)")
    gap_fraction: float = setting(0.8, low=1e-6, high=1.0,
                                  help="Uncovered share of a full window for GAP (diagnostics WARN)")
    capture_dir: str = setting(
        "", live=False,
        help="Save uncovered frames and their embeddings here while a gap is suspected, ready to label ('' = off)",
        doc="While a gap is suspected, uncovered frames are saved here (images/<stamp>.png, embeddings/<stamp>.npy, "
            "captures.jsonl, classes.txt) ready to label; \"\" = no capture. `semla-library gaps <dir>` proposes "
            "library entries from them.")
    capture_period_s: float = setting(1.0, low=0.0, high=86400.0,
                                      help="At most one captured frame per this many seconds")
    capture_max_frames: int = setting(
        200, low=0, high=10_000_000,
        help="The capture folder never holds more frames than this (earlier runs' frames count)")

    def __post_init__(self):
        fields.validate(self)
        if self.suspect_fraction > self.gap_fraction:
            raise ValueError(f"suspect_fraction {self.suspect_fraction} must not exceed "
                             f"gap_fraction {self.gap_fraction}")

    def replace(self, **changes) -> "CoverageSettings":
        return fields.replace(self, **changes)


@dataclass(frozen=True)
class CoverageReport:
    """One embedded frame's verdict (the fields of msg/CoverageStatus, plus what the node logs)."""

    status: int
    nearest_distance: float
    relative_distance: float
    scale_free_support: float
    uncovered: bool                 # this frame
    uncovered_fraction: float       # over the window so far
    nearest_adapters: tuple[str, ...]
    captured: bool                  # this frame was saved
    frames_captured: int
    capture_dir: str
    capture_full: bool

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]


class CoverageMonitor:
    """Judges each embedded frame against the library and keeps the sustained status.

    Not thread-safe: one caller (the node's inference thread, or a replay) feeds it in frame order.
    `clock` gives seconds for the capture rate limit (replays pass their frame time).
    """

    def __init__(self, settings: CoverageSettings | None = None, *, classes=(), navigator_id: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._settings = settings or CoverageSettings()
        self._clock = clock
        self._classes = tuple(classes)
        self._navigator_id = navigator_id
        self._window: deque[bool] = deque(maxlen=self._settings.window)
        self._last_capture = -math.inf
        self._capture = self._open_capture()

    @property
    def settings(self) -> CoverageSettings:
        return self._settings

    @property
    def capture(self) -> GapCapture | None:
        return self._capture

    def update_settings(self, **changes) -> None:
        """Change settings live (validated first); the window keeps its newest frames."""
        settings = self._settings.replace(**changes)
        reopen = settings.capture_dir != self._settings.capture_dir
        self._settings = settings
        self._window = deque(self._window, maxlen=settings.window)
        if reopen:
            self._capture = self._open_capture()
        elif self._capture is not None:
            self._capture.max_frames = settings.capture_max_frames

    def _open_capture(self) -> GapCapture | None:
        s = self._settings
        if not s.capture_dir:
            return None
        return GapCapture(s.capture_dir, s.capture_max_frames, classes=self._classes, navigator_id=self._navigator_id)

    def observe(self, embedding, library, retrieval, image: np.ndarray | None = None,
                name: str | None = None, info: dict | None = None, now: float | None = None,
                found: Retrieval | None = None) -> CoverageReport:
        """Judge one embedded frame. `library` is the segmenter's AdapterLibrary, `retrieval` its
        SegmenterSettings (top-K, temperature, metric: the support is the node's). With `image` and
        `name` an uncovered frame may be captured (rate limit and size bound permitting). `now` is the
        frame's time (its stamp; default: the clock), so the rate limit holds in the frames' own time;
        a time going backwards (a bag replayed in a loop) restarts the limit. `found`: the embedding's retrieval
        with those settings, made already by the segmenter (FrameResult.retrieval): then nothing is searched again."""
        s = self._settings
        e = np.asarray(embedding, dtype=np.float64).reshape(-1)
        r = found if found is not None else retrieve(e, library.index, retrieval.top_k, retrieval.temperature,
                                                     retrieval.metric)
        nearest, relative = relative_distance(e, library, r, retrieval.metric)
        support = frame_support(e, library, r, retrieval.metric).scale_free
        uncovered = bool((math.isfinite(relative) and relative > s.max_relative_distance)
                         or (s.min_scale_free_support > 0 and math.isfinite(support)
                             and support < s.min_scale_free_support))
        self._window.append(uncovered)
        fraction = sum(self._window) / len(self._window)
        if len(self._window) == s.window and fraction >= s.gap_fraction:
            status = GAP
        elif fraction >= s.suspect_fraction:
            status = GAP_SUSPECTED
        else:
            status = COVERED
        names = tuple(library.names[i] for i in r.indices)
        captured = False
        capture = self._capture
        if uncovered and status != COVERED and capture is not None and image is not None and name is not None:
            now = self._clock() if now is None else float(now)
            if now < self._last_capture:
                self._last_capture = -math.inf
            if now - self._last_capture >= s.capture_period_s and not capture.full:
                record = {"nearest_distance": nearest, "relative_distance": relative,
                          "scale_free_support": support, "nearest_adapters": list(names),
                          "status": STATUS_NAMES[status], **(info or {})}
                captured = capture.save(name, image, e, record)
                if captured:
                    self._last_capture = now
        return CoverageReport(status=status, nearest_distance=nearest, relative_distance=relative,
                              scale_free_support=support, uncovered=uncovered, uncovered_fraction=fraction,
                              nearest_adapters=names, captured=captured,
                              frames_captured=capture.count if capture is not None else 0,
                              capture_dir=str(capture.root) if capture is not None else "",
                              capture_full=capture.full if capture is not None else False)

    def describe(self, report: CoverageReport) -> list[tuple[bool, str]]:
        """(is a problem, sentence) lines for an operator: a full capture folder, and the gap last (the
        node's diagnostics headline is the last of equally severe entries)."""
        lines = []
        if report.capture_full:
            lines.append((True, f"capture folder {report.capture_dir} is full ({report.frames_captured} frames): "
                                "no more frames are captured"))
        if report.status == GAP:
            where = (f"frames captured in {report.capture_dir}" if report.capture_dir
                     else "set a capture folder to keep them for labelling")
            lines.append((True, f"library gap: {report.uncovered_fraction:.0%} of the last {self._settings.window} "
                                f"embedded frames lie farther than {self._settings.max_relative_distance:g}x the "
                                f"centroid spacing from every adapter (now {report.relative_distance:.2f}x; nearest "
                                f"{', '.join(report.nearest_adapters[:3])}); {where}"))
        else:
            lines.append((False, STATUS_NAMES[report.status]))
        return lines
