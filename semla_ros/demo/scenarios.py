"""The shift scenarios on the demo world: deterministic streams with the true domain and the time of every frame.

Why: the node's headline is when it swaps adapters, and a single demo drive only shows the easy case
(far-apart domains, abrupt changes). These streams cover what a robot meets: abrupt changes between
every ordered pair of domains, gradual drift (frames blended between two lights over tens of seconds),
flicker (two domains alternating every 0.5-3 s), short transients (a tunnel of 1-3 s inside clear),
returns to the previous domain and long stationary stretches. Each frame is a new street (its own
seed) and carries its time in seconds (frame stamps: no wall clock anywhere), so a replay is exact.
`semla_ros.evaluation.shifts` replays them through the node's segmenter and scores the policies.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..evaluation.shifts import StreamFrame
from . import world

RATE_HZ = 10.0
SEED_BASE = 3_000_000   # disjoint from training (< 1e6), held-out (1e6..2e6) and demo-camera (2e6..) seeds


@dataclass(frozen=True)
class Part:
    """`seconds` of `domain`; with `to`, the frames blend linearly from `domain` into `to` over the part."""

    domain: str
    seconds: float
    to: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str                  # abrupt | drift | flicker | transient | return | stationary
    parts: tuple[Part, ...]
    rate_hz: float = RATE_HZ
    seed: int = 0              # offsets the street seeds, so two scenarios never show the same frames

    def __post_init__(self):
        for p in self.parts:
            for d in (p.domain, p.to):
                if d is not None and d not in world.DOMAINS:
                    raise ValueError(f"scenario {self.name}: unknown domain {d!r}; known: {', '.join(world.DOMAINS)}")
            if p.to is not None and world.DOMAIN_LAYOUT[p.domain] != world.DOMAIN_LAYOUT[p.to]:
                raise ValueError(f"scenario {self.name}: {p.domain} and {p.to} have different layouts; "
                                 "only the light of one street can be blended")
            if round(p.seconds * self.rate_hz) < 1:
                raise ValueError(f"scenario {self.name}: part {p} is shorter than one frame")

    @cached_property
    def frames(self) -> tuple[StreamFrame, ...]:
        out = []
        for p in self.parts:
            n = int(round(p.seconds * self.rate_hz))
            for j in range(n):
                mix = 0.0 if p.to is None else (j + 0.5) / n
                domain = p.domain if mix < 0.5 else p.to
                i = len(out)
                out.append(StreamFrame(index=i, time_s=i / self.rate_hz, domain=domain,
                                       source=(p.domain, p.to or p.domain, mix),
                                       seed=SEED_BASE + self.seed * 100_000 + i))
        return tuple(out)

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.rate_hz

    def render(self, frame: StreamFrame, size=world.DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """(image, labels) of one frame; a blended frame mixes the same street under both lights."""
        a, b, mix = frame.source
        first = world.render(a, frame.seed, size)
        if mix == 0.0 or a == b:
            return first.image, first.labels
        second = world.render(b, frame.seed, size)
        image = (1.0 - mix) * first.image.astype(np.float32) + mix * second.image.astype(np.float32)
        return (image + 0.5).astype(np.uint8), first.labels


def tour(domains) -> list[str]:
    """A closed walk through every ordered pair of distinct domains exactly once (Hierholzer's
    algorithm on the complete directed graph), starting and ending at the first domain."""
    domains = list(domains)
    if len(domains) < 2:
        return domains
    todo = {d: [x for x in reversed(domains) if x != d] for d in domains}
    stack, walk = [domains[0]], []
    while stack:
        here = stack[-1]
        if todo[here]:
            stack.append(todo[here].pop())
        else:
            walk.append(stack.pop())
    return walk[::-1]


def near_pairs(library, domains=world.DOMAINS, limit: float = 0.7) -> list[tuple[str, str, float]]:
    """Pairs of domains whose adapters' centroids are closer than `limit` x the library's median spacing,
    nearest first: the changes a distance threshold is most likely to miss."""
    from .build_assets import adapter_name

    names = list(library.names)
    rows = {d: names.index(adapter_name(d)) for d in domains if adapter_name(d) in names}
    c, median = library.centroids, library.median_inter_centroid_distance
    out = []
    for i, a in enumerate(rows):
        for b in list(rows)[i + 1:]:
            spacing = float(np.linalg.norm(c[rows[a]] - c[rows[b]]) / median)
            if spacing < limit:
                out.append((a, b, spacing))
    return sorted(out, key=lambda p: p[2])


def flicker(a: str, b: str, period_s: float, seconds: float, lead_s: float = 10.0) -> tuple[Part, ...]:
    """`lead_s` of `a` (a settled start), then `b`, `a`, `b`, ... each for `period_s`."""
    n = int(round(seconds / period_s))
    return (Part(a, lead_s),) + tuple(Part(b if k % 2 == 0 else a, period_s) for k in range(n))


def suite(domains=world.DOMAINS, segment_s: float = 8.0, stationary_s: float = 60.0, flicker_s: float = 40.0,
          drift_s: float = 30.0, flicker_pair=("clear", "night"), periods=(0.5, 1.0, 2.0, 3.0),
          stationary=("clear", "snow", "fog"), transient=("clear", "tunnel"),
          drift=("clear", "dusk", "night"), ret=("clear", "fog", "snow"), every_pair: bool = True,
          near=()) -> list[Scenario]:
    """The scenario suite; the defaults are the benchmark's, tests pass shorter durations.

    `near`: (a, b, ...) pairs (see near_pairs) played a -> b -> a each, `segment_s` per part."""
    have = set(domains)
    out = []
    if every_pair:
        out.append(Scenario("every pair", "abrupt", tuple(Part(d, segment_s) for d in tour(domains)), seed=1))
    if near:
        out.append(Scenario("near pairs", "abrupt", tuple(Part(d, segment_s) for a, b, *_ in near
                                                          for d in (a, b, a)), seed=12))
    if set(drift) <= have:
        a, b, c = drift
        out.append(Scenario(f"drift {a}>{b}>{c}", "drift", (
            Part(a, segment_s), Part(a, drift_s, b), Part(b, segment_s), Part(b, drift_s, c), Part(c, segment_s)),
            seed=2))
    if set(flicker_pair) <= have:
        a, b = flicker_pair
        out += [Scenario(f"flicker {a}/{b} {p:g} s", "flicker", flicker(a, b, p, flicker_s, segment_s), seed=3 + k)
                for k, p in enumerate(periods)]
    if set(transient) <= have:
        a, b = transient
        out.append(Scenario(f"transient {b} in {a}", "transient", (
            Part(a, segment_s), Part(b, 1.0), Part(a, segment_s), Part(b, 2.0), Part(a, segment_s), Part(b, 3.0),
            Part(a, segment_s)), seed=10))
    if set(ret) <= have:
        a, b, c = ret
        out.append(Scenario(f"return {a}>{b}>{a}>{c}>{a}", "return", tuple(
            Part(d, 2 * segment_s) for d in (a, b, a, c, a)), seed=11))
    out += [Scenario(f"stationary {d}", "stationary", (Part(d, stationary_s),), seed=20 + k)
            for k, d in enumerate(stationary) if d in have]
    return out
