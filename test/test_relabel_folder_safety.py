"""The relabelling job treats the user's folders as precious: `--restart` removes only the files the job's
own job.json says it wrote, an output folder that holds (or lies inside) an input is refused before any work,
an input with nothing to relabel is an error (never a complete-looking report), and a refusal names the
setting that changed."""
from __future__ import annotations

import json

import pytest
from relabel_helpers import build_domain_library, demo_model_config, engine, write_drive

from semla_ros.relabel.cluster import ClusterSettings
from semla_ros.relabel.job import RelabelJob, RelabelSettings
from semla_ros.relabel.recording import RecordingError, open_recording
from semla_ros.relabel.state import JobFolder, JobMismatch

SETTINGS = RelabelSettings(batch_size=8, cluster=ClusterSettings(min_size=3), threads=1, compare=False)


def _manifest(*recordings: str, scale: float = 1.0) -> dict:
    return {"format": 1, "inputs": [{"name": r, "path": f"/data/{r}"} for r in recordings],
            "state": {"cluster": {"scale": scale, "min_size": 3}, "batch_size": 8}}


def _job_files(root, recording: str) -> None:
    (root / recording / "embeddings").mkdir(parents=True)
    (root / recording / "embeddings" / "batch-000000.npz").write_bytes(b"x")
    (root / recording / "masks").mkdir()
    (root / recording / "masks" / "f0.png").write_bytes(b"x")
    (root / recording / "frames.csv").write_text("name\n")
    (root / "segments").mkdir(exist_ok=True)
    (root / "segments" / "c0.json").write_text("{}")
    for name in ("clusters.json", "report.json", "report.md"):
        (root / name).write_text("{}")


def test_restart_removes_only_the_jobs_own_files(tmp_path):
    out = tmp_path / "out"
    folder = JobFolder(out)
    assert folder.claim(_manifest("drive")) is False
    _job_files(out, "drive")
    # What a user keeps beside the job's outputs: a file, a folder, and a file inside the recording's folder.
    (out / "notes.txt").write_text("mine")
    (out / "recordings").mkdir()
    (out / "recordings" / "drive.mcap").write_bytes(b"precious")
    (out / "drive" / "calibration.yaml").write_text("mine too")

    with pytest.raises(JobMismatch, match=r"differs in: state\.cluster\.scale\); .*--restart"):
        folder.claim(_manifest("drive", scale=0.4))
    assert (out / "drive" / "masks" / "f0.png").is_file()          # refused: nothing removed

    assert folder.claim(_manifest("drive", scale=0.4), restart=True) is False
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "recordings" / "drive.mcap").read_bytes() == b"precious"
    assert (out / "drive" / "calibration.yaml").read_text() == "mine too"
    for gone in ("drive/embeddings", "drive/masks", "drive/frames.csv", "segments", "clusters.json", "report.json",
                 "report.md"):
        assert not (out / gone).exists(), gone
    assert json.loads((out / "job.json").read_text())["state"]["cluster"]["scale"] == 0.4


def test_restart_ignores_recording_names_that_leave_the_folder(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "elsewhere" / "masks").mkdir(parents=True)
    out.mkdir()
    (out / "job.json").write_text(json.dumps({"format": 1, "inputs": [{"name": ".."}, {"name": "../elsewhere"}]}))
    JobFolder(out).claim(_manifest("drive"), restart=True)
    assert (tmp_path / "elsewhere" / "masks").is_dir()


def test_output_folder_overlapping_an_input_is_refused(tmp_path):
    (tmp_path / "scratch" / "drive").mkdir(parents=True)
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*scratch holds the input .*drive"):
        JobFolder(tmp_path / "scratch").check_target([tmp_path / "scratch" / "drive"])
    with pytest.raises(ValueError, match=r"lies inside the input"):
        JobFolder(tmp_path / "scratch" / "drive" / "out").check_target([tmp_path / "scratch" / "drive"])
    with pytest.raises(ValueError, match=r"holds the input"):
        JobFolder(tmp_path / "scratch" / "drive").check_target([tmp_path / "scratch" / "drive"])
    with pytest.raises(ValueError, match=r"README.md is a file"):
        JobFolder(tmp_path / "README.md").check_target([tmp_path / "scratch" / "drive"])
    JobFolder(tmp_path / "out" / "new").check_target([tmp_path / "scratch" / "drive"])   # fine: nothing made
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("safety")
    config = demo_model_config(root)
    build_domain_library(root / "library", config, domains=("clear", "night"), frames=2)
    write_drive(root / "scratch" / "drive", "clear:1,night:1")
    return {"root": root, "build": engine(config, root / "library", top_k=2)}


@pytest.mark.slow
def test_the_issue_repro_is_refused_before_any_work_and_the_recording_survives(world):
    """`semla-relabel scratch/drive --out scratch ... --restart` emptied scratch/, recording included."""
    scratch = world["root"] / "scratch"
    before = sorted(p.relative_to(scratch) for p in scratch.rglob("*"))
    rec = open_recording(scratch / "drive", "/demo/image")
    for restart in (False, True):
        with pytest.raises(ValueError, match="holds the input"):
            RelabelJob(world["build"], [rec], scratch, SETTINGS, restart=restart, progress=False)
    assert sorted(p.relative_to(scratch) for p in scratch.rglob("*")) == before


@pytest.mark.slow
def test_a_restarted_job_keeps_what_the_user_put_in_out_and_names_the_bag_after_itself(world, tmp_path):
    rec = open_recording(world["root"] / "scratch" / "drive", "/demo/image")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    RelabelJob(world["build"], [rec], out, SETTINGS, progress=False).run()
    assert sorted(p.name for p in (out / "drive" / "relabelled").iterdir()) == ["metadata.yaml", "relabelled.mcap"]
    assert not (out / "drive" / "relabelled.partial").exists()
    other = RelabelSettings(batch_size=8, cluster=ClusterSettings(scale=0.4, min_size=3), threads=1, compare=False)
    report = RelabelJob(world["build"], [rec], out, other, restart=True, progress=False).run()
    assert (out / "notes.txt").read_text() == "mine" and report["resumed"]["embedding_batches"] == 0
    assert (out / "drive" / "relabelled" / "metadata.yaml").is_file()


@pytest.mark.slow
def test_inputs_with_nothing_to_relabel_are_errors_not_reports(world, tmp_path):
    from semla_ros.demo.export import export_domain

    folder = export_domain(tmp_path / "data", "night", range(500, 503))
    for image in (folder / "images").iterdir():
        image.write_bytes(b"broken")
    rec = open_recording(folder)
    with pytest.raises(RecordingError, match=r"no readable frame \(3 unreadable; first: .*nothing relabelled"):
        RelabelJob(world["build"], [rec], tmp_path / "out", SETTINGS, progress=False).run()
    assert not (tmp_path / "out" / "report.json").exists()

    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    with Writer(tmp_path / "empty", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=store)
    with pytest.raises(RecordingError, match=r"nothing to relabel in .*empty: no message on '/cam/image'"):
        open_recording(tmp_path / "empty", "/cam/image")
