"""The demo drive as a bag for `semla-relabel` (`semla-demo --record-bag DIR`): a complete bag appears under the
name asked for, an existing path is never replaced, and an unwritable place is refused before any frame."""
from __future__ import annotations

import pytest

from semla_ros.demo.drive_bag import record_drive_bag
from semla_ros.demo.sequence import DomainSequence
from semla_ros.relabel.recording import open_recording

SEQUENCE = DomainSequence.parse("clear:0.3,night:0.3", 10.0)


def test_the_recorded_bag_is_what_semla_relabel_reads(tmp_path):
    truth = record_drive_bag(tmp_path / "demo_drive", SEQUENCE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_drive"]          # no staging folder left
    recording = open_recording(tmp_path / "demo_drive", "/demo/image", "/demo/ground_truth")
    frames = [f for f in recording.frames() if hasattr(f, "image")]
    assert len(frames) == len(truth) == 6 and all(f.label is not None for f in frames)


def test_an_existing_path_or_an_unwritable_place_is_refused_before_any_frame(tmp_path):
    (tmp_path / "demo_drive").mkdir()
    (tmp_path / "demo_drive" / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="--record-bag .*demo_drive exists"):
        record_drive_bag(tmp_path / "demo_drive", SEQUENCE)
    assert (tmp_path / "demo_drive" / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--record-bag .*file is a file"):
        record_drive_bag(tmp_path / "file" / "bag", SEQUENCE)
