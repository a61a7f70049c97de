"""Each shift scenario as a test: the node's default policy, replayed through SemlaSegmenter (frame counts, no timing).

The random demo engine (test/shift_setup.py: demo CAT-Seg with seeded random weights, its tower as
navigator, centroids from the tower's embeddings of each domain) on shortened scenarios of
`semla_ros.demo.scenarios` at 10 Hz. Asserted, with the default settings (the evidence trigger):
no missed change (a domain whose adapter is per-frame top-1 for >= 3 s of its segment), every
reaction within 15 frames, no swap in a stationary stream or a stationary stretch; flicker between far
domains is followed with recalls (one new fusion per domain, core/recall.py), flicker between the nearest
pair is damped to at most 3 swaps; a tunnel transient is followed and the way back is a recall. The
benchmark (`semla-bench shifts`) runs the full-length suite on the trained demo assets.
"""
from __future__ import annotations

import pytest
from shift_setup import random_demo_engine

from semla_ros.core.settings import SegmenterSettings
from semla_ros.demo import scenarios
from semla_ros.demo.build_assets import adapter_name
from semla_ros.evaluation.shifts import replay, score

pytestmark = pytest.mark.slow
DEFAULTS = SegmenterSettings()
REACTION_S = 1.5


@pytest.fixture(scope="module")
def engine(tmp_path_factory, one_torch_thread):
    return random_demo_engine(tmp_path_factory.mktemp("lib"))


@pytest.fixture(scope="module")
def suite(engine):
    _, library, _ = engine
    near = scenarios.near_pairs(library)
    assert near, "the demo world has domains closer than 0.7x the median spacing"
    out = scenarios.suite(every_pair=False, near=near, segment_s=5.0, stationary_s=20.0, flicker_s=12.0,
                          drift_s=10.0, periods=(0.5, 1.0, 3.0), stationary=("clear", "snow"))
    a, b, _ = near[0]
    out.append(scenarios.Scenario(f"flicker {a}/{b} 1.5 s", "flicker", scenarios.flicker(a, b, 1.5, 18.0, 5.0),
                                  seed=20))
    return {s.name: s for s in out}


def run(engine, scenario, settings=DEFAULTS):
    predictor, library, navigator = engine
    frames = scenario.frames
    images = [scenario.render(f)[0] for f in frames]
    log, _ = replay(predictor, library, navigator, settings, frames, images)
    return score("default", scenario.name, frames, log, scenario.rate_hz, adapter_for=adapter_name), log


def check_changes(result):
    assert result.missed == 0, result.changes
    assert all(r <= REACTION_S + 1e-9 for r in result.reactions_s), result.changes   # 15 frames at 10 Hz
    assert result.extra_swaps == 0, result.swap_times_s


def swaps_after_first_change(result, scenario) -> int:
    """Swaps from the first change on (one before it can only correct the startup fusion, which comes from
    a handful of warm-up frames; a late one would be an extra swap)."""
    first = next(f.time_s for f in scenario.frames if f.domain != scenario.frames[0].domain)
    return sum(t >= first for t in result.swap_times_s)


def test_near_pairs_swap_once_each_way(engine, suite):
    scenario = suite["near pairs"]
    result, _ = run(engine, scenario)
    check_changes(result)
    assert result.detectable >= len(scenarios.near_pairs(engine[1]))   # at least one way of every pair counts
    assert swaps_after_first_change(result, scenario) <= len(scenario.parts) - 1   # at most one per change


def test_drift_swaps_without_flapping(engine, suite):
    name = next(n for n in suite if n.startswith("drift"))
    result, _ = run(engine, suite[name])
    assert result.missed == 0 and result.extra_swaps == 0, result.changes
    assert result.swaps <= 4, result.swap_times_s        # two changes; at most one stop on the way each


@pytest.mark.parametrize("period", [0.5, 1.0, 3.0])
def test_flicker_between_far_domains_is_followed_with_recalls(engine, suite, period):
    scenario = suite[f"flicker clear/night {period:g} s"]
    result, log = run(engine, scenario)
    assert result.extra_swaps == 0 or period < 5.0          # flicker has no stationary stretch after the start
    assert result.fusions <= 3, [e.reason for e in log if e.fusion]   # startup, night, clear again at most
    assert result.swaps <= result.fusions + result.recalls
    if period >= 3.0:
        check_changes(result)


def test_flicker_between_the_nearest_pair_is_damped(engine, suite):
    name = next(n for n in suite if n.endswith("1.5 s"))
    scenario = suite[name]
    result, _ = run(engine, scenario)
    assert swaps_after_first_change(result, scenario) <= 3, result.swap_times_s


def test_a_tunnel_is_followed_and_the_way_back_is_a_recall(engine, suite):
    scenario = next(s for n, s in suite.items() if n.startswith("transient"))
    result, log = run(engine, scenario)
    check_changes(result)
    long_tunnel = [i for i, f in enumerate(scenario.frames) if f.domain == "tunnel"][-30:]
    assert any(log[i].active and log[i].active[0] == adapter_name("tunnel") for i in long_tunnel), \
        "the 3 s tunnel was not followed"
    assert result.fusions <= 3, [(e.reason, e.active[:1]) for e in log if e.fusion]   # startup, tunnel, one more


def test_return_to_the_previous_domain(engine, suite):
    scenario = next(s for n, s in suite.items() if n.startswith("return"))
    result, _ = run(engine, scenario)
    check_changes(result)
    # a change may stop once at a neighbouring adapter (the first frames' mean retrieves it), never more
    assert swaps_after_first_change(result, scenario) <= 2 * (len(scenario.parts) - 1)
    assert result.fusions <= 4, "clear is fused once: the returns to it are recalls"


@pytest.mark.parametrize("domain", ["clear", "snow"])
def test_stationary_stream_never_swaps(engine, suite, domain):
    result, log = run(engine, suite[f"stationary {domain}"])
    assert result.swaps == 0, result.swap_times_s
    assert sum(e.fusion for e in log) == 1                # the startup fusion only
    assert log[-1].active[0] == adapter_name(domain)
