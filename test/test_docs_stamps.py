"""Docs that cannot go stale silently: every generated section of README.md and docs/*.md is marked, and its
recorded settings (docs/stamps.json) must be today's defaults; a changed default fails here, naming the
section and the command that regenerates it. Fast: reads files and settings, runs nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from semla_ros.cli import docs

REPO = Path(__file__).resolve().parents[1]

# Sections generated before stamps existed and not regenerated since (strict, so a section regenerated and stamped
# must leave the list). Empty: every section has been regenerated with today's defaults and stamped.
NOT_REGENERATED: set[str] = set()


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="not regenerated since stamps exist"))
    if n in NOT_REGENERATED else n for n in docs.SECTIONS])
def test_each_generated_section_ran_with_todays_defaults(name):
    found = [p for p in docs.problems(REPO) if p.startswith((f"{name} ", f"{name}:"))]
    assert not found, "\n".join(found)


def test_every_section_is_marked_in_its_file_and_stamped():
    stamps = docs.read_stamps(REPO)
    for section in docs.SECTIONS.values():
        assert section.marker in (REPO / section.file).read_text(), (section.name, section.marker)
        assert stamps[section.name]["command"] == section.command, section.name


def test_a_changed_default_is_named_with_the_section_and_its_command(tmp_path):
    """A copy of the docs stamped now is current; a recorded setting that differs from today's default (the
    retrieval trigger, as happened to docs/relabel.md) makes the check name the section, the setting and the
    regenerating command."""
    for section in docs.SECTIONS.values():
        (tmp_path / section.file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / section.file, tmp_path / section.file)
    for name in docs.SECTIONS:
        docs.stamp(name, tmp_path)
    assert docs.problems(tmp_path) == []
    stamps = json.loads((tmp_path / docs.STAMPS).read_text())
    stamps["relabel"]["settings"]["segmenter"]["trigger"] = "distance"
    (tmp_path / docs.STAMPS).write_text(json.dumps(stamps))
    [problem] = docs.problems(tmp_path)
    assert problem.startswith("relabel (docs/relabel.md)") and "segmenter.trigger" in problem
    assert "`semla-bench relabel`" in problem
