"""`semla-bench shifts` output: the tables and docs/shifts.md from scored replays (hand-written records)."""
from types import SimpleNamespace

import numpy as np

from semla_ros.bench import shifts as bench
from semla_ros.evaluation.report import replace_section
from semla_ros.evaluation.shifts import FrameLog, StreamFrame, score


def scored(policy, scenario, domains, tops, actives, fusions=()):
    frames = [StreamFrame(i, i / 10.0, d) for i, d in enumerate(domains)]
    log = [FrameLog(top1=t, active=(a,) if a else (), weights=(1.0,) if a else (), fusion=i in fusions,
                    scale_free_support=1.0 + i % 3, active_scale_free_support=0.5 + (a == t), miou=0.3 + 0.1 * (a == t))
           for i, (t, a) in enumerate(zip(tops, actives, strict=True))]
    return score(policy, scenario, frames, log, 10.0, adapter_for=lambda d: f"demo-{d}"), log


def test_tables_and_doc(tmp_path):
    domains = ["clear"] * 60 + ["fog"] * 60
    tops = ["demo-clear"] * 60 + ["demo-fog"] * 60
    fast, fast_log = scored("default", "every pair", domains, tops, ["demo-clear"] * 75 + ["demo-fog"] * 45, {0, 75})
    slow, slow_log = scored("distance", "every pair", domains, tops, ["demo-clear"] * 120, {0})
    flick, _ = scored("default", "flicker clear/night 1 s", ["clear"] * 50, ["demo-clear"] * 50, ["demo-clear"] * 50)
    policies = bench.policies(("distance", "default"))
    scores = [fast, slow, flick]
    summary = bench.summary_table(scores, policies)
    assert "| default | 0 / 1 | 0.00 | 1.5 / 1.5 |" in summary and "| distance | 1 / 1 |" in summary
    per = bench.scenario_table(scores, policies)
    assert "| every pair | 12 | 0, 1/1, –, – | 1, 0/1, 1.5, – |" in per
    centroids = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    library = SimpleNamespace(names=["demo-clear", "demo-fog", "demo-night"], centroids=centroids,
                              median_inter_centroid_distance=2.0)
    pairs = bench.pair_table(scores, policies, library)
    assert "| clear → fog | 0.50 | missed | 1.5 s |" in pairs
    assert bench.flicker_lines(scores, 1.5)[0].endswith("(at most one per 1.5 s dwell: 4)")

    records = {"default": [(d, False, e) for d, e in zip(domains, fast_log, strict=True)]}
    rows = bench.support_rows(records)
    assert {r["score"] for r in rows} == {"scale_free_support", "active_scale_free_support"}
    active = next(r for r in rows if r["score"] == "active_scale_free_support")
    assert active["pooled"] > 0.9          # built so that the active support follows the mIoU
    wrong = bench.wrong_fusion_rows(records)[0]
    assert wrong["not_top"]["frames"] == 15 and wrong["top"]["frames"] == 105

    doc = tmp_path / "shifts.md"
    replace_section(doc, bench.OVERHEAD_SECTION, "## Navigator overhead\n\nfigures")
    bench.write_doc(doc, {"summary": summary, "scenarios": per, "pairs": pairs}, scores, policies, "semla-bench shifts",
                    60.0, 1.5)
    text = doc.read_text()
    assert text.startswith("# Shift detection") and summary in text and pairs in text
    assert "**default**: missed 0 of 1 detectable changes" in text
    assert "## Navigator overhead\n\nfigures" in text          # the overhead section survives a regeneration
