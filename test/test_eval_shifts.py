"""The shift metrics (evaluation/shifts.score) on hand-written frame records: each definition, checked."""
import math

import pytest

from semla_ros.evaluation.shifts import FrameLog, PolicySummary, StreamFrame, score, segments

RATE = 10.0


def stream(*parts):
    """parts: (domain, frames); returns StreamFrames at RATE."""
    domains = [domain for domain, n in parts for _ in range(n)]
    return [StreamFrame(index=i, time_s=i / RATE, domain=d) for i, d in enumerate(domains)]


def log(tops, actives):
    """Per frame: per-frame top-1 and the active fusion's (single) adapter ('' = none yet)."""
    return [FrameLog(top1=t, active=(a,) if a else (), weights=(1.0,) if a else (), fusion=False)
            for t, a in zip(tops, actives, strict=True)]


def test_segments_are_runs_of_one_true_domain():
    assert segments(stream(("x", 3), ("y", 2), ("x", 1))) == [(0, 3), (3, 5), (5, 6)]


def test_reaction_missed_swaps_and_shares():
    frames = stream(("a", 100), ("b", 100), ("c", 100))
    tops = ["A"] * 100 + ["B"] * 100 + ["C"] * 100
    # A active from frame 2 (startup), B from frame 115 (1.5 s after the change), C never.
    actives = [""] * 2 + ["A"] * 113 + ["B"] * 185
    s = score("p", "s", frames, log(tops, actives), RATE, adapter_for=str.upper)
    assert (s.detectable, s.missed) == (2, 1)
    assert s.reactions_s == [pytest.approx(1.5)]
    assert s.changes == [("a", "b", pytest.approx(1.5)), ("b", "c", pytest.approx(float("nan"), nan_ok=True))]
    assert s.swaps == 1 and s.swap_times_s == [pytest.approx(11.5)]          # startup is not a swap
    assert s.extra_swaps == 0                       # 1.5 s into its segment: not stationary (settle 5 s)
    served = 298
    assert s.wrong_share == pytest.approx((15 + 100) / served)
    assert s.off_domain_share == pytest.approx((15 + 100) / served)
    assert s.fusions_per_min == 0 and s.duration_s == 30.0


def test_a_change_needs_three_seconds_of_its_adapter_on_top_to_count():
    frames = stream(("a", 100), ("t", 25), ("a", 100))     # a 2.5 s transient
    tops = ["A"] * 100 + ["T"] * 25 + ["A"] * 100
    s = score("p", "s", frames, log(tops, ["A"] * 225), RATE)
    assert (s.detectable, s.missed) == (1, 0)             # only the return counts; A never left: reaction 0
    assert s.reactions_s == [0.0]
    frames = stream(("a", 100), ("t", 30), ("a", 100))    # 3 s: it counts, and staying on A misses it
    tops = ["A"] * 100 + ["T"] * 30 + ["A"] * 100
    s = score("p", "s", frames, log(tops, ["A"] * 230), RATE)
    assert (s.detectable, s.missed) == (2, 1)


def test_expected_adapter_is_the_segments_majority_top1_not_every_frame():
    frames = stream(("a", 50), ("b", 100))
    tops = ["A"] * 50 + ["B", "B", "X"] * 33 + ["B"]      # a third of b's frames rank another adapter first
    actives = ["A"] * 60 + ["B"] * 90
    s = score("p", "s", frames, log(tops, actives), RATE)
    assert (s.detectable, s.missed) == (1, 0) and s.reactions_s == [pytest.approx(1.0)]


def test_stationary_swaps_are_extra():
    frames = stream(("a", 200))
    actives = ["A"] * 100 + ["B"] * 100                   # a swap 10 s into a stationary stretch
    s = score("p", "s", frames, log(["A"] * 200, actives), RATE)
    assert s.swaps == 1 and s.extra_swaps == 1
    assert s.stationary_min == pytest.approx(150 / RATE / 60)
    summary = PolicySummary.of("p", [s])
    assert summary.extra_swaps_per_stationary_min == pytest.approx(1 / s.stationary_min)
    assert math.isnan(summary.reaction_p95_s)


def test_blended_frames_are_not_stationary():
    frames = [StreamFrame(i, i / RATE, "a", ("a", "b", 0.3)) for i in range(100)]
    s = score("p", "s", frames, log(["A"] * 100, ["A"] * 100), RATE)
    assert s.stationary_min == 0


def test_lengths_must_match():
    with pytest.raises(ValueError, match="frames"):
        score("p", "s", stream(("a", 3)), log(["A"] * 2, ["A"] * 2), RATE)


def test_doc_sections_are_replaced_in_place_and_kept(tmp_path):
    from semla_ros.evaluation.report import kept_sections, replace_section

    doc = tmp_path / "doc.md"
    doc.write_text("# generated\n\nnumbers\n")
    replace_section(doc, "tool a", "first")
    replace_section(doc, "tool b", "other")
    replace_section(doc, "tool a", "second")
    text = doc.read_text()
    assert text.startswith("# generated\n\nnumbers\n") and "first" not in text
    assert text.index("second") < text.index("other")          # replaced where it was
    kept = kept_sections(text)
    assert kept == "<!-- tool a: begin -->\nsecond\n<!-- tool a: end -->\n\n<!-- tool b: begin -->\nother\n" \
                   "<!-- tool b: end -->"
