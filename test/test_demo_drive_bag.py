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


def test_semla_demo_record_bag_writes_it_and_refuses_an_existing_folder(tmp_path):
    """The console script: exit 0 and the bag; then exit 2 with one line and the folder untouched."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "semla-demo"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [str(script), "--record-bag", str(tmp_path / "drive"), "--sequence", "clear:0.3,night:0.3"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and (tmp_path / "drive" / "metadata.yaml").is_file()
    before = sorted(p.name for p in (tmp_path / "drive").iterdir())
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "exists" in again.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "drive").iterdir()) == before
