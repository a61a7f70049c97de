"""The training comparison's report: intervals over seeds, paired differences to standard LoRA, the statements
it makes (including where a method does not beat standard), and its section surviving `semla-eval demo`."""
import math

import pytest

from semla_ros.demo import eval_table
from semla_ros.demo import training_table as tt
from semla_ros.demo.eval_table import write_docs
from semla_ros.evaluation.report import kept_sections, replace_section

DOMAINS = ["clear", "fog", "night"]


def render(fisa_shift=-0.10, recycle_shift=0.0):
    """Three seeds; recyclelora = standard + shift ± noise, fisa clearly lower."""
    noise = {250: 0.01, 251: -0.01, 252: 0.0}
    miou = {}
    for method, shift in (("standard", 0.0), ("recyclelora", recycle_shift), ("fisa", fisa_shift)):
        for seed, n in noise.items():
            miou[f"{method} s{seed}"] = {row: {"clear": 0.6, "fog": 0.5 + shift + n, "night": 0.3 + shift + n}
                                         for row in tt.ROWS}
    facts = {"trainable_parameters": 41728, "train_seconds_mean": 10.0, "init_seconds_mean": 1.0, "entry_rank": 8}
    return {"methods": list(tt.METHODS), "seeds": list(noise), "budget": {"steps": 40, "batch_size": 8, "lr": 4e-3,
            "loss": "ce"}, "domains": DOMAINS, "exclude": ["clear"], "images_per_domain": 24, "seconds": 600.0,
            "zero_shot": {"clear": 0.6, "fog": 0.25, "night": 0.15}, "miou": miou, "settings": {},
            "training": {"standard": facts, "recyclelora": {**facts, "entry_rank": 16},
                         "fisa": {**facts, "trainable_parameters": 10240, "train_seconds_mean": 5.0}}}


def test_interval_is_the_student_t_half_width():
    mean, half = tt.interval([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2) and half == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
    assert math.isnan(tt.interval([0.5])[1])


def test_summary_pairs_each_seed_with_standard():
    s = tt.summarise(render())
    mean, half, diffs = s["delta"]["fisa"]["oracle"]
    h = lambda a, b: 2 / (1 / a + 1 / b)
    assert diffs[0] == pytest.approx(h(0.41, 0.21) - h(0.51, 0.31))
    assert mean < 0 and mean + half < 0                  # fisa clearly lower
    mean, half, _ = s["delta"]["recyclelora"]["semla"]
    assert mean == pytest.approx(0.0, abs=1e-12)         # same numbers -> no difference


def test_report_says_where_a_method_does_not_beat_standard():
    text = tt.markdown(render(), tt.Path("docs"))
    assert "**fisa does not beat standard LoRA** on: oracle, SemLA, SemLA debounced" in text
    assert "**recyclelora does not beat standard LoRA**" in text
    assert "0.25x standard's 41,728" in text and "| fisa | 10,240 | 8 |" in text
    assert "source domain clear (left out of the h-mean), SemLA with borrowed adapters scores standard 60.0" in text
    better = tt.markdown(render(recycle_shift=0.05), tt.Path("docs"))
    assert "recyclelora vs standard, oracle: Δ h-mean +" in better and "higher than standard" in better
    assert "**recyclelora does not beat standard LoRA**" not in better


def test_section_is_replaced_in_place_and_kept_by_the_demo_table(tmp_path, monkeypatch):
    md = tmp_path / "evaluation.md"
    md.write_text("## Evaluation\n\nold table\n")
    replace_section(md, tt.SECTION, "## Training\nfirst")
    replace_section(md, tt.SECTION, "## Training\nsecond")
    text = md.read_text()
    assert text.startswith("## Evaluation") and "second" in text and "first" not in text
    assert text.count(f"<!-- {tt.SECTION}: begin -->") == 1
    kept = kept_sections(text)
    assert kept.startswith(f"<!-- {tt.SECTION}: begin -->") and kept.endswith(f"<!-- {tt.SECTION}: end -->")
    assert "second" in kept and kept_sections("## nothing marked") == ""
    # `semla-eval demo` rewrites its own part (its text stands in here) and keeps the comparison section
    monkeypatch.setattr(eval_table, "_markdown", lambda render, out: "## Evaluation\n\nnew table\n")
    write_docs({"summary": {"table": ""}, "budget": None, "settings": {}, "images_per_domain": 24, "domains": [],
                "exclude": []}, tmp_path)
    text = md.read_text()
    assert text.startswith("## Evaluation\n\nnew table") and "old table" not in text and "second" in text
