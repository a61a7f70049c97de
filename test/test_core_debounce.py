"""DomainShiftDebouncer on simulated embedding streams (time is injected, nothing sleeps)."""
import math

import numpy as np
import pytest

from semla_ros.core.debounce import DomainShiftDebouncer, resolve_threshold
from semla_ros.core.settings import SegmenterSettings

DEFAULTS = SegmenterSettings()


def settings(alpha=DEFAULTS.ema_alpha, **changes):
    """The segmenter's defaults with the distance trigger, no dwell, one warm-up frame, and `changes`."""
    return DEFAULTS.replace(**(dict(trigger="distance", dwell_s=0.0, warmup_frames=1, ema_alpha=alpha) | changes))


def make(threshold=1.0, **changes):
    """A distance-rule debouncer (threshold 1.0 absolute) with `settings(**changes)`."""
    return DomainShiftDebouncer(settings(**changes), threshold)


def start(debouncer, query, now):
    """What the segmenter does for a startup fusion (its query is the active one's once it succeeds)."""
    debouncer.propose(query, now)

DIM, FPS = 32, 30.0
RNG_SIGMA = 0.05   # per-dimension noise: ~0.28 in norm per frame


def domain(seed):
    return np.random.default_rng(seed).normal(size=DIM)


def run(debouncer, stream, t0=0.0, startup=True):
    """Feed embeddings at FPS; the caller-side startup fusion sets the reference. Returns shift frame indices."""
    shifts = []
    for i, e in enumerate(stream):
        now = t0 + i / FPS
        d = debouncer.update(e, now)
        if d.startup and startup:
            start(debouncer, d.ema, now)
        if d.shift:
            shifts.append(i)
    return shifts


def noisy(center, n, seed):
    return center + np.random.default_rng(seed).normal(scale=RNG_SIGMA, size=(n, DIM))


def test_stationary_noisy_stream_never_swaps():
    threshold = resolve_threshold(0.5, "relative", 2.0)   # library median spacing 2 -> 1.0
    deb = make(alpha=0.1, threshold=threshold, min_consecutive=3, cooldown_s=5.0)
    stream = noisy(domain(0), 10_000, seed=1)
    assert run(deb, stream) == []
    # the noise was real: raw frames wander, the EMA is what keeps it calm
    assert np.linalg.norm(stream[1:] - stream[0], axis=1).max() > 0.4


@pytest.mark.parametrize("min_consecutive", [1, 3, 5])
def test_step_after_cooldown_gives_exactly_one_swap_within_min_consecutive_plus_one(min_consecutive):
    a, b = domain(0), domain(0)
    b = a + (domain(2) / np.linalg.norm(domain(2))) * 4.0          # step of 4x the threshold
    deb = make(alpha=0.5, threshold=1.0, min_consecutive=min_consecutive, cooldown_s=5.0)
    step = 600                                                      # 20 s: cooldown long over
    stream = np.concatenate([noisy(a, step, 3), noisy(b, 3000, 4)])
    shifts = run(deb, stream)
    assert len(shifts) == 1
    assert 0 <= shifts[0] - step < min_consecutive + 1
    assert np.linalg.norm(deb.reference - b) < 1.0                 # the new query sits in the new domain


def test_step_during_cooldown_swaps_once_right_after_cooldown():
    a = domain(0)
    b = a + 3.0 * domain(5) / np.linalg.norm(domain(5))
    deb = make(alpha=0.1, threshold=1.0, min_consecutive=3, cooldown_s=5.0)
    step = 30                                                        # 1 s after the startup fusion
    stream = np.concatenate([noisy(a, step, 6), noisy(b, 3000, 7)])
    shifts = run(deb, stream)
    first_after_cooldown = math.ceil(5.0 * FPS)
    assert len(shifts) == 1 and first_after_cooldown <= shifts[0] < first_after_cooldown + 3 + 1


@pytest.mark.parametrize("period_frames", [2, 10, 40, 200])
def test_oscillation_around_threshold_at_most_one_swap_per_cooldown(period_frames):
    a = domain(0)
    u = domain(8) / np.linalg.norm(domain(8))
    cooldown = 5.0
    deb = make(alpha=0.3, threshold=1.0, min_consecutive=2, cooldown_s=cooldown)
    n = 6000
    t = np.arange(n)
    offset = 1.0 + 0.6 * np.sign(np.sin(2 * np.pi * (t + 0.5) / period_frames))   # 0.4 .. 1.6 x threshold
    stream = a + offset[:, None] * u + np.random.default_rng(9).normal(scale=RNG_SIGMA, size=(n, DIM))
    stream[:5] = a                                                                  # startup in domain a
    shifts = run(deb, stream)
    times = np.array(shifts) / FPS
    assert np.all(np.diff(times) >= cooldown)
    assert len(shifts) <= (n / FPS) / cooldown + 1
    if period_frames == 2:
        assert shifts == []   # never min_consecutive frames in a row over the threshold


def test_warmup_sets_ema_directly_and_then_asks_for_startup():
    deb = make(alpha=0.1, threshold=1.0, min_consecutive=1, cooldown_s=0.0, warmup_frames=3)
    es = [np.full(4, v) for v in (1.0, 2.0, 6.0)]
    d1, d2, d3 = (deb.update(e, i) for i, e in enumerate(es))
    assert d1.warming_up and d2.warming_up and not (d1.startup or d1.shift or d2.startup or d2.shift)
    assert d3.startup and not d3.warming_up and np.allclose(d3.ema, 3.0) and math.isnan(d3.ema_distance)
    start(deb, d3.ema, 2.0)
    d4 = deb.update(np.full(4, 3.0), 3.0)
    assert not (d4.shift or d4.startup) and d4.ema_distance == pytest.approx(0.0)
    d5 = deb.update(np.full(4, 23.0), 4.0)               # EMA moves by 0.1 * 20 = 2 per dim
    assert d5.shift and d5.ema_distance == pytest.approx(4.0)


def test_live_reconfiguration_and_bad_values():
    deb = make()
    deb.configure(settings(min_consecutive=4), 2.5)
    assert deb.threshold == 2.5 and deb.min_consecutive == 4
    for bad in (dict(alpha=0.0), dict(alpha=1.5), dict(min_consecutive=0), dict(min_consecutive=1.5),
                dict(cooldown_s=-1), dict(warmup_frames=0)):
        with pytest.raises(ValueError):                  # the settings refuse it before the debouncer sees it
            deb.configure(settings(**bad), 1.0)
    for threshold in (-1.0, 0.0):
        with pytest.raises(ValueError, match="threshold"):
            deb.configure(settings(), threshold)
    assert deb.threshold == 2.5 and deb.alpha == DEFAULTS.ema_alpha  # a rejected change changes nothing
    deb.update(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="dimension"):
        deb.update(np.zeros(4), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        deb.update(np.array([0.0, np.nan, 0.0]), 0.2)


def test_threshold_modes():
    assert resolve_threshold(0.5, "absolute", 10.0) == 0.5
    assert resolve_threshold(0.5, "relative", 10.0) == 5.0
    assert resolve_threshold(0.5, "relative", float("nan")) == math.inf
    with pytest.raises(ValueError, match="mode"):
        resolve_threshold(0.5, "percent", 1.0)
    with pytest.raises(ValueError, match="positive"):
        resolve_threshold(0.0, "absolute", 1.0)


@pytest.mark.parametrize("step_size", [2.0, 10.0, 50.0])
def test_big_steps_with_slow_ema_still_swap_exactly_once(step_size):
    """With alpha=0.1 the EMA lags a step; the re-anchored query must not leave a second swap behind."""
    a = domain(0)
    b = a + step_size * domain(11) / np.linalg.norm(domain(11))
    deb = make(alpha=0.1, threshold=1.0, min_consecutive=3, cooldown_s=5.0)
    step = 600
    shifts = run(deb, np.concatenate([noisy(a, step, 12), noisy(b, 3000, 13)]))
    lag = math.ceil(math.log(1 - 1.0 / step_size) / math.log(0.9))   # frames until the EMA crosses
    assert len(shifts) == 1 and shifts[0] - step <= lag + 3


def test_failed_fusion_rolls_back_to_the_active_reference_and_waits_a_cooldown():
    deb = make(alpha=1.0, min_consecutive=1, cooldown_s=2.0)
    d0 = deb.update(np.zeros(3), 0.0)
    assert d0.startup
    start(deb, d0.ema, 0.0)
    shift = deb.update(np.full(3, 5.0), 3.0)
    assert shift.shift and np.allclose(deb.reference, 5.0)      # proposed: r is the new query
    deb.rollback(shift.ema, d0.ema)                               # the fusion failed; d0's is active
    assert np.allclose(deb.reference, 0.0)                        # back to the active fusion's query
    assert not deb.update(np.full(3, 5.0), 4.0).shift             # attempt at t=3 still cools down
    retry = deb.update(np.full(3, 5.0), 5.0)
    assert retry.shift                                            # retried once the cooldown passed
    deb.rollback(np.zeros(3), retry.ema)                          # an older attempt's failure changes nothing
    assert np.allclose(deb.reference, 5.0)


def test_failed_startup_is_retried_after_the_cooldown():
    deb = make(cooldown_s=2.0)
    first = deb.update(np.zeros(3), 0.0)
    assert first.startup
    deb.propose(first.ema, 0.0)
    assert not deb.update(np.zeros(3), 0.5).startup               # being made: no second startup
    deb.rollback(first.ema, None)                                 # no fusion is active
    assert deb.reference is None
    assert not deb.update(np.zeros(3), 1.0).startup               # cooling down after the failure
    assert deb.update(np.zeros(3), 2.5).startup
