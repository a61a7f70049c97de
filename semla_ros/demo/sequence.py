"""The demo drive: which domain the camera shows at each frame, and which street it renders.

Why a separate file: the camera node plays it and the demo CLI scores against it; both must agree
on "frame i is domain d, seed s" without ROS in the loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .world import DOMAINS

DEFAULT_SEQUENCE = "clear:8,fog:9,night:9,clear:8,snow:9,tunnel:9,rain:8"
# Camera frames use their own seed range, disjoint from training (< 1e6) and held-out (1e6..2e6) seeds.
CAMERA_SEED_BASE = 2_000_000


@dataclass(frozen=True)
class Segment:
    domain: str
    seconds: float


@dataclass(frozen=True)
class DomainSequence:
    """Consecutive domain segments played at `rate_hz` frames per second."""

    segments: tuple[Segment, ...]
    rate_hz: float = 10.0

    @classmethod
    def parse(cls, text: str, rate_hz: float = 10.0, domains: tuple[str, ...] = DOMAINS,
              open_ended: bool = False) -> "DomainSequence":
        """'clear:8,fog:9' -> clear for 8 s, then fog for 9 s. Raises ValueError with the reason.

        `domains` are the names allowed; with `open_ended` a segment of 0 s is allowed too (it plays until
        the player is told to move on: the synthetic camera's SIGUSR1)."""
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        segments = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, sep, secs = part.partition(":")
            if not sep:
                raise ValueError(f"segment {part!r} must look like 'domain:seconds'")
            if name not in domains:
                raise ValueError(f"unknown domain {name!r} in sequence; known: {', '.join(domains)}")
            try:
                seconds = float(secs)
            except ValueError:
                raise ValueError(f"segment {part!r}: {secs!r} is not a number of seconds") from None
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"segment {part!r}: seconds must be a finite number >= 0")
            if seconds * rate_hz < 1 and not (open_ended and seconds == 0):
                raise ValueError(f"segment {part!r} is shorter than one frame at {rate_hz} Hz")
            segments.append(Segment(name, seconds))
        if not segments:
            raise ValueError("empty domain sequence")
        return cls(tuple(segments), float(rate_hz))

    def frames_per_segment(self) -> list[int]:
        return [int(round(s.seconds * self.rate_hz)) for s in self.segments]

    @property
    def num_frames(self) -> int:
        return sum(self.frames_per_segment())

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.rate_hz

    def segment_index(self, frame: int) -> int:
        """Index of the segment playing at `frame` (wraps around: the drive loops)."""
        frame %= self.num_frames
        for i, n in enumerate(self.frames_per_segment()):
            if frame < n:
                return i
            frame -= n
        raise AssertionError("unreachable: frame reduced modulo num_frames")

    def domain_at(self, frame: int) -> str:
        return self.segments[self.segment_index(frame)].domain

    @staticmethod
    def seed_at(frame: int, base: int = CAMERA_SEED_BASE) -> int:
        """Every frame is a new street: camera seeds never meet training or held-out seeds."""
        return base + int(frame)
