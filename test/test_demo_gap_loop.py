"""The library-gap loop end to end (the demo-sized model with seeded random weights, so it runs in about a
minute): a domain held out of the library is flagged and captured on the first drive, `semla-library gaps`
proposes one entry from the captured frames, `semla-library train` makes it, and on the second drive the
same domain is covered and the new adapter is fused there. (The numbers with the trained demo assets are
in docs/relabel.md: `python -m semla_ros.demo.gap_loop`.)"""
from __future__ import annotations

import json
from itertools import pairwise

import pytest
from relabel_helpers import build_domain_library, demo_model_config

from semla_ros.demo.gap_loop import plot, run
from semla_ros.demo.sequence import DomainSequence

pytestmark = pytest.mark.slow


def test_held_out_domain_is_flagged_captured_proposed_trained_and_covered_next_drive(tmp_path, one_torch_thread):
    from semla_ros.demo import world
    from semla_ros.engine import EngineSpec

    config = demo_model_config(tmp_path)
    build_domain_library(tmp_path / "library", config, domains=("clear", "fog", "night"))
    spec = EngineSpec(model_config=str(config), allow_random_weights=True, library_path=str(tmp_path / "library"),
                      navigator="tower", device="cpu", backend="torch", classes=tuple(world.CLASS_NAMES))
    result = run(spec, tmp_path / "work", "night", DomainSequence.parse("clear:2,night:4"), train_steps=4,
                 log=lambda _: None)

    first = result["drive1"]
    assert first["entries"] == ["demo-clear", "demo-fog"]
    gap = [f for f in first["frames"] if f.get("status") == "gap"]
    assert gap and {f["domain"] for f in gap} == {"night"}
    # frames the cadence did not embed carry no verdict; no embedded clear frame is flagged
    assert not any(f.get("status") not in (None, "covered") for f in first["frames"] if f["domain"] == "clear")
    captured = [f for f in first["frames"] if f.get("captured")]
    assert len(captured) == first["captured"] >= 3 and all(f["domain"] == "night" for f in captured)
    # the capture rate limit
    assert all(b["t"] - a["t"] >= 0.5 - 1e-9 for a, b in pairwise(captured))
    (proposal,) = result["proposals"]["proposals"]
    assert proposal["frames"] == len(captured) and proposal["mean_relative_distance"] > 0.5
    assert result["labelled"] == {"night": len(captured)}

    entry = tmp_path / "work" / "library_extended" / "demo-gap-000"
    meta = json.loads((entry / "metadata.json").read_text())
    assert meta["training_images"] == len(captured) and meta["domain"] == "gap-000"
    old, new = result["drive2_old"], result["drive2_new"]
    assert new["entries"] == ["demo-clear", "demo-fog", "demo-gap-000"]
    def night_gap(d):
        return sum(1 for f in d["frames"] if f["domain"] == "night" and f.get("status") == "gap")
    assert night_gap(old) > 0 and night_gap(new) == 0
    assert any(s["adapters"][0] == "demo-gap-000" for s in new["swaps"])
    last_night = [f for f in new["frames"] if f["domain"] == "night"][-1]
    assert last_night["active"][0] == "demo-gap-000"
    assert plot(result, tmp_path / "gap.png").stat().st_size > 20_000
