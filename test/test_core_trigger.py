"""The shift triggers (core/trigger.py) inside the debouncer, on simulated embedding streams timed by stamps.

Geometry: centroids on a line and around it, in units of the library's median spacing (1.0), so the
distance rule's threshold 0.5 and the retrieval rule's margin read like the node's relative settings.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from semla_ros.core.debounce import DomainShiftDebouncer
from semla_ros.core.retrieval import CentroidIndex, retrieve
from semla_ros.core.settings import SegmenterSettings
from semla_ros.core.trigger import DistanceRule, RetrievalRule, weight_distance

DIM, FPS = 8, 10.0
# A: origin; B: 0.38 from A (like dusk/tunnel in the demo world); C, D far away.
CENTROIDS = np.zeros((4, DIM))
CENTROIDS[1, 0] = 0.38
CENTROIDS[2, 1] = 1.5
CENTROIDS[3, 2] = 1.5
A, B, C, D = CENTROIDS


def debouncer(trigger="retrieval", *, alpha=0.2, min_consecutive=3, cooldown_s=2.0, dwell_s=2.0, margin=0.05,
              warmup_frames=5, threshold=0.5, top_k=2):
    rule = RetrievalRule(CENTROIDS, top_k, 0.05, "euclidean", margin, 0.5) if trigger == "retrieval" else None
    settings = SegmenterSettings(ema_alpha=alpha, min_consecutive=min_consecutive, cooldown_s=cooldown_s,
                                 dwell_s=dwell_s, warmup_frames=warmup_frames, trigger=trigger)
    return DomainShiftDebouncer(settings, threshold, rule=rule)


def run(deb, stream, times=None):
    """What the segmenter does with an inline executor: startup on warm-up, every fusion active at once.
    Returns [(frame, top-1 index of the fusion, query)] for startup and shifts."""
    fusions = []
    times = np.arange(len(stream)) / FPS if times is None else times
    for i, (e, t) in enumerate(zip(stream, times, strict=True)):
        d = deb.update(e, t)
        if d.startup:
            deb.propose(d.query, t)
        if d.startup or d.shift:
            fusions.append((i, int(retrieve(d.query, CENTROIDS, 1).indices[0]), d.query))
    return fusions


def noisy(center, n, seed, sigma=0.03):
    return center + np.random.default_rng(seed).normal(scale=sigma, size=(n, DIM))


def test_weight_distance_is_total_variation_over_the_union():
    r1 = retrieve(A + 0.01, CENTROIDS, 2, 10.0)   # a high temperature: both weights matter
    r2 = retrieve(B - 0.01, CENTROIDS, 2, 10.0)
    assert weight_distance(r1, r1) == 0.0
    union = set(r1.indices.tolist()) | set(r2.indices.tolist())
    w1 = {i: w for i, w in zip(r1.indices.tolist(), r1.weights, strict=True)}
    w2 = {i: w for i, w in zip(r2.indices.tolist(), r2.weights, strict=True)}
    assert weight_distance(r1, r2) == pytest.approx(0.5 * sum(abs(w1.get(i, 0) - w2.get(i, 0)) for i in union))
    far = retrieve(C, CENTROIDS, 1, 0.05)
    assert weight_distance(retrieve(A, CENTROIDS, 1, 0.05), far) == pytest.approx(1.0)


def test_rules_on_a_near_pair_and_on_a_far_move_that_retrieves_the_same_adapter():
    distance, retrieval = DistanceRule(0.5), RetrievalRule(CENTROIDS, 2, 0.05, "euclidean", 0.05, 0.5)
    # In B, 0.38 from A's reference: the distance rule never fires, the retrieval rule does.
    assert not distance.over(B, A) and retrieval.over(B, A)
    # Just past the midpoint of A and B: a new top-1, but inside the margin (hysteresis).
    assert not retrieval.over(A + (B - A) * 0.55, A) and retrieval.over(A + (B - A) * 0.7, A)
    # 0.8 away from A on the far side from everything: distance fires, retrieval still builds A's fusion.
    away = A - 0.8 * np.eye(DIM)[3]
    assert distance.over(away, A) and not retrieval.over(away, A)


def test_near_change_missed_by_distance_is_one_swap_with_retrieval():
    stream = np.concatenate([noisy(A, 100, 1), noisy(B, 100, 2)])
    assert [f[1] for f in run(debouncer("distance", dwell_s=0.0), stream)] == [0]        # the change is missed
    fusions = run(debouncer(), stream)
    assert [f[1] for f in fusions] == [0, 1]
    # over from about 2 frames after the change, then the 2 s dwell: about 2.2 s at 10 Hz
    assert 100 + 2.0 * FPS <= fusions[1][0] <= 100 + 3.0 * FPS
    assert np.linalg.norm(fusions[1][2] - B) < 0.1                    # re-anchored in the new domain


@pytest.mark.parametrize("period_s", [0.5, 1.0, 1.5])
def test_flicker_faster_than_the_dwell_never_swaps(period_s):
    half = int(period_s * FPS)
    stream = np.concatenate([noisy(A, 50, 3)] + [noisy(C if k % 2 == 0 else A, half, 10 + k) for k in range(40)])
    fusions = run(debouncer(), stream)
    assert len(fusions) <= 2, fusions            # startup, and at most one swap to wherever the EMA settles


def test_flicker_slower_than_the_dwell_swaps_at_most_once_per_dwell():
    half = int(3.0 * FPS)
    stream = np.concatenate([noisy(A, 50, 3)] + [noisy(C if k % 2 == 0 else A, half, 10 + k) for k in range(20)])
    fusions = run(debouncer(), stream)
    frames = [f[0] for f in fusions]
    assert np.all(np.diff(frames[1:]) >= 2.0 * FPS)
    assert 15 <= len(fusions) - 1 <= 20       # every 3 s segment is a real change: one swap each


def test_stationary_noise_around_a_near_pair_never_swaps():
    # A noisy domain sitting 0.15 from A towards B: per frame, B is often nearer; the EMA is not.
    center = A + (B - A) * 0.4
    stream = noisy(center, 6000, 4, sigma=0.08)
    assert sum(np.linalg.norm(stream - B, axis=1) < np.linalg.norm(stream - A, axis=1)) > 1000
    assert len(run(debouncer(), stream)) == 1


def test_dwell_and_min_consecutive_both_hold_in_stamp_time():
    stream = np.concatenate([noisy(A, 60, 5), noisy(C, 200, 6)])
    # The EMA (alpha 0.2) is over from the 4th C frame (index 63: 59% of the way, past the margin).
    for dwell in (0.0, 1.0, 3.0):
        fusions = run(debouncer(dwell_s=dwell, cooldown_s=0.0), stream)
        assert len(fusions) == 2
        wait = fusions[1][0] - 63                  # frames since the EMA went over
        assert wait == max(3 - 1, round(dwell * FPS)), (dwell, wait)


def test_frame_trigger_fuses_every_frame_for_that_frame():
    stream = np.concatenate([noisy(A, 10, 7), noisy(C, 10, 8)])
    deb = debouncer("frame", warmup_frames=1)
    fusions = run(deb, stream)
    assert len(fusions) == 20
    for (_, _, query), e in zip(fusions[1:], stream[1:], strict=True):
        np.testing.assert_array_equal(query, e)            # per-image: the frame's own embedding


def test_time_running_backwards_restarts_cleanly():
    deb = debouncer()
    a, c = noisy(A, 100, 9), noisy(C, 100, 10)
    first = run(deb, a)
    assert [f[1] for f in first] == [0]
    reference = deb.reference
    # The bag loops: time starts again at 0, now in domain C.
    d = deb.update(c[0], 0.0)
    assert d.restarted and d.warming_up and not d.shift and not d.startup
    np.testing.assert_array_equal(deb.reference, reference)       # the active fusion stays
    rest = run(deb, c[1:], times=np.arange(1, 100) / FPS)
    assert [f[1] for f in rest] == [2]                             # one shift to C, no second startup
    assert 2.0 * FPS <= rest[0][0] + 1 <= 5.0 * FPS                # the dwell counted from the loop
    # timers restarted: no stale cooldown from the old timeline blocked it
    assert not any(deb.update(e, 10.0 + i / FPS).restarted for i, e in enumerate(c[:5]))


def test_retrieval_trigger_needs_its_rule_and_validates():
    with pytest.raises(ValueError, match="rule"):
        DomainShiftDebouncer(SegmenterSettings(trigger="retrieval"), 1.0)
    with pytest.raises(ValueError, match="trigger"):
        DomainShiftDebouncer(SegmenterSettings(), 1.0, trigger="cusum")
    with pytest.raises(ValueError, match="trigger"):
        SegmenterSettings(trigger="cusum")
    with pytest.raises(ValueError, match="dwell"):
        SegmenterSettings(dwell_s=-1.0)
    deb = debouncer()
    deb.configure(deb.settings, 0.5, trigger="distance")
    assert deb.trigger == "distance" and math.isclose(deb.threshold, 0.5)


def test_the_rule_searches_the_current_index_once_per_ema_and_never_ranks_an_excluded_entry():
    library = SimpleNamespace(index=CentroidIndex(CENTROIDS))   # what the rule reads of a library: its index
    rule = RetrievalRule(library, 2, 0.05, "euclidean", 0.05, 0.5)
    assert rule.over(B, A) and rule.candidate(B) == 1
    assert rule.retrieve(B) is rule.retrieve(B.copy())          # asked twice about one EMA: one search
    library.index = library.index.excluding([1])                 # B's adapter found unusable since
    expected = retrieve(B, library.index, 2, 0.05)
    assert rule.candidate(B) == int(expected.indices[0]) != 1 and 1 not in rule.retrieve(B).indices
    library.index = library.index.excluding(range(len(CENTROIDS)))
    assert not rule.over(B, A) and rule.candidate(B) == -1       # nothing usable: no shift to confirm
