"""The evidence trigger (core/evidence.py and its use in the debouncer): per-candidate CUSUM, flap damping.

Synthetic geometry: three centroids on a line (A at 0, B near A, C far), isotropic noise whose per-frame
top-1 flips between A and B on about a quarter of A's frames (the demo navigator's clear/snow noise).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from semla_ros.core.debounce import DomainShiftDebouncer
from semla_ros.core.evidence import NEAR_EXPONENT, ShiftEvidence
from semla_ros.core.retrieval import CentroidIndex
from semla_ros.core.settings import SegmenterSettings

DIM = 8
CENTROIDS = np.zeros((3, DIM))
CENTROIDS[1, 0] = 0.4      # B: near A
CENTROIDS[2, 0] = 1.6      # C: far
A, B, C = 0, 1, 2
MEDIAN = float(np.median([0.4, 1.6, 1.2]))
NOISE = 0.17               # per axis: A's frames fall nearer B on one in nine frames


def evidence(threshold=2.0, window=9, flap_window_s=2.0, flap_penalty=0.5, half_life_s=30.0, index=None):
    return ShiftEvidence(index if index is not None else CentroidIndex(CENTROIDS), threshold, window,
                         flap_window_s, flap_penalty, half_life_s, MEDIAN)


def frames(center, n, seed):
    rng = np.random.default_rng(seed)
    return CENTROIDS[center][None, :] + NOISE * rng.standard_normal((n, DIM))


def test_one_frame_adds_its_distance_difference_over_the_spacing():
    ev = evidence()
    e = CENTROIDS[A] + np.array([0.3] + [0.0] * (DIM - 1))
    assert ev.observe(e, A, [B, C], 0.0) is None
    d = np.linalg.norm(CENTROIDS - e, axis=1)
    assert ev.statistics[B] == pytest.approx((d[A] - d[B]) / 0.4)
    assert ev.statistics[C] == pytest.approx((d[A] - d[C]) / 1.6) if d[A] > d[C] else C not in ev.statistics


def test_noise_around_the_active_centroid_never_confirms_a_shift():
    ev = evidence()
    stream = frames(A, 3000, seed=1)
    nearer_b = np.mean(np.linalg.norm(stream - CENTROIDS[B], axis=1) < np.linalg.norm(stream - CENTROIDS[A], axis=1))
    assert 0.1 < nearer_b < 0.4           # the noise this test is about: B is per-frame top-1 often
    assert all(ev.observe(e, A, [B, C], 0.1 * t) is None for t, e in enumerate(stream))


@pytest.mark.parametrize("target,most_frames", [(C, 2), (B, 12)])
def test_a_real_change_is_confirmed_in_a_few_frames_far_faster_than_near(target, most_frames):
    ev = evidence()
    for t, e in enumerate(frames(A, 50, seed=2)):
        assert ev.observe(e, A, [B, C], 0.1 * t) is None
    for k, e in enumerate(frames(target, 50, seed=3)):
        found = ev.observe(e, A, [B, C], 5.0 + 0.1 * k)
        if found is not None:
            break
    assert found is not None
    # the candidate may be B on the way to C (frames at C are as much nearer B as nearer C, relative to the
    # spacing): what is fused is retrieval's top-1 for the query, the mean of the frames behind it
    assert int(np.argmin(np.linalg.norm(CENTROIDS - found.query, axis=1))) == target
    assert k + 1 <= most_frames, f"took {k + 1} frames"
    assert found.frames <= 9 and found.statistic >= found.needed


def test_the_query_is_the_mean_of_the_frames_behind_the_evidence():
    ev = evidence(window=3)
    stream = frames(C, 10, seed=4)
    ev_threshold_high = evidence(threshold=1e6, window=3)
    for t, e in enumerate(stream):
        ev_threshold_high.observe(e, A, [B, C], 0.1 * t)
    ev = evidence(threshold=ev_threshold_high.statistics[C] - 1e-9, window=3)
    found = None
    for t, e in enumerate(stream):
        found = ev.observe(e, A, [B, C], 0.1 * t) or found
    assert found is not None and found.frames == 3
    np.testing.assert_allclose(found.query, stream[-3:].mean(axis=0))


def test_a_flap_raises_the_evidence_needed_most_between_near_domains_and_decays():
    ev = evidence(flap_penalty=0.5, half_life_s=10.0)
    assert ev.needed(A, B, 0.4, 0.0) == 2.0
    ev.moved(A, B, now=0.0)
    ev.moved(B, A, now=1.0)               # back within the flap window: a flap
    near = 2.0 + 0.5 * (MEDIAN / 0.4) ** NEAR_EXPONENT
    far = 2.0 + 0.5 * (MEDIAN / 1.6) ** NEAR_EXPONENT
    assert ev.needed(A, B, 0.4, 1.0) == pytest.approx(near)
    assert ev.needed(A, C, 1.6, 1.0) == pytest.approx(far)
    assert far < near
    assert ev.needed(A, B, 0.4, 11.0) == pytest.approx(2.0 + 0.25 * (MEDIAN / 0.4) ** NEAR_EXPONENT)


def test_a_return_after_the_flap_window_is_no_flap():
    ev = evidence(flap_window_s=2.0)
    ev.moved(A, C, now=0.0)
    ev.moved(C, A, now=5.0)
    assert ev.penalty(5.0) == 0.0 and ev.needed(A, B, 0.4, 5.0) == 2.0


def test_excluded_entries_are_never_candidates():
    index = CentroidIndex(CENTROIDS).excluding([C])
    ev = evidence(index=index)
    found = None
    for t, e in enumerate(frames(C, 20, seed=5)):
        rows, _ = index.nearest(e, 3)
        assert C not in rows.tolist()
        found = ev.observe(e, A, rows, 0.1 * t) or found
    assert C not in ev.statistics
    assert found is None or found.row == B


def _debouncer(**changes):
    settings = SegmenterSettings().replace(warmup_frames=3, cooldown_s=0.0, **changes)
    index = CentroidIndex(CENTROIDS)
    ev = ShiftEvidence(index, settings.evidence_threshold, 9, settings.flap_window_s, settings.flap_penalty,
                       settings.flap_half_life_s, MEDIAN)
    return DomainShiftDebouncer(settings, math.inf, trigger="evidence", evidence=ev)


def test_the_debouncer_swaps_once_per_step_and_stays_put_on_noise():
    deb = _debouncer()
    t, shifts = 0.0, []
    for center, n, seed in [(A, 100, 6), (C, 100, 7), (A, 100, 8)]:
        for e in frames(center, n, seed):
            d = deb.update(e, t)
            if d.startup:
                deb.propose(d.query, t)
            if d.shift:
                shifts.append((round(t, 1), int(np.argmin(np.linalg.norm(CENTROIDS - d.query, axis=1)))))
            t += 0.1
    assert [row for _, row in shifts] == [C, A]
    assert shifts[0][0] <= 10.0 + 0.2 and shifts[1][0] <= 20.0 + 0.2      # within two frames of each step


def test_a_failed_fusion_or_time_running_back_clears_the_evidence():
    deb = _debouncer(evidence_threshold=1e6)
    for t, e in enumerate(frames(A, 5, seed=9)):
        d = deb.update(e, 0.1 * t)
        if d.startup:
            deb.propose(d.query, 0.1 * t)
    for t, e in enumerate(frames(C, 3, seed=10)):
        deb.update(e, 1.0 + 0.1 * t)
    assert deb.evidence.statistics
    deb.rollback(np.ones(DIM), deb.reference)      # not the reference: nothing changes
    assert deb.evidence.statistics
    deb.update(frames(C, 1, seed=11)[0], 0.0)       # time ran back
    assert len(deb.evidence.statistics) <= 2 and max(deb.evidence.statistics.values(), default=0.0) < 2.0
