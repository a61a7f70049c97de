"""`semla-relabel` end to end on a bag written here (the demo camera's frames, two corrupt messages) and on
an image folder: masks made with each cluster's fusion, the output bag stamped like the source, the report
with the comparison, and an interrupted job finished by a rerun with the same result."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from relabel_helpers import CLASSES, build_domain_library, demo_model_config, engine, write_drive

from semla_ros.relabel.cluster import ClusterSettings
from semla_ros.relabel.job import LocalWorkers, RelabelJob, RelabelSettings
from semla_ros.relabel.recording import open_recording
from semla_ros.relabel.work import Fusion, activate_fusion

pytestmark = pytest.mark.slow
SETTINGS = RelabelSettings(batch_size=8, cluster=ClusterSettings(min_size=3), threads=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("relabel")
    config = demo_model_config(root)
    build_domain_library(root / "library", config)
    write_drive(root / "drive", "clear:1.5,night:1.5,tunnel:1.5", corrupt_after={3, 31})
    return {"root": root, "config": config, "library": root / "library",
            "build": engine(config, root / "library", top_k=2, min_consecutive=2, cooldown_s=1.0)}


@pytest.fixture(scope="module")
def finished(world):
    out = world["root"] / "out"
    rec = open_recording(world["root"] / "drive", "/demo/image", "/demo/ground_truth")
    report = RelabelJob(world["build"], [rec], out, SETTINGS, progress=False).run()
    return out, report


def _bag_messages(path):
    from rosbags.rosbag2 import Reader

    from semla_ros.relabel.bag import typestore

    store, out = typestore(), {}
    with Reader(path) as reader:
        for c, ns, raw in reader.messages():
            out.setdefault(c.topic, []).append((ns, store.deserialize_cdr(raw, c.msgtype)))
    return out


def test_masks_come_from_each_clusters_fusion_and_the_bag_is_stamped_like_the_source(world, finished):
    out, report = finished
    rec = report["recordings"]["drive"]
    assert (rec["frames"], rec["skipped"]) == (45, 2) and rec["skipped_by_kind"] == {"SerdeError": 2}
    assert [i for i, _ in rec["skipped_examples"]] == [4, 33]
    clusters = report["clusters"]
    assert sum(c["frames"] for c in clusters) == 45 and all(c["frames"] >= 3 for c in clusters)
    assert all(abs(sum(c["weights"]) - 1) < 1e-9 and len(c["adapters"]) == 2 for c in clusters)
    # A mask on disk is what the model predicts with its cluster's fusion active (the node's fusion path).
    build = world["build"]
    frames = {f.index: f for f in open_recording(world["root"] / "drive", "/demo/image").frames()
              if hasattr(f, "image")}
    saved = json.loads((out / "clusters.json").read_text())["clusters"]
    for c in saved:
        index = c["frames"]["drive"][len(c["frames"]["drive"]) // 2]
        activate_fusion(build.segmenter, build.library, Fusion(tuple(c["adapters"]), tuple(c["weights"]), (), 0, 0))
        expected = build.predictor.predict(frames[index].image).class_ids
        build.segmenter.fuse_now([], [])
        mask = np.asarray(Image.open(out / "drive" / "masks" / f"{index:06d}.png"))
        assert (mask == expected).mean() > 0.999   # batched vs single-frame float rounding flips a rare tie
    # The output bag: a mask and a support score per frame with its source header, one class map.
    bag = _bag_messages(out / "drive" / "relabelled")
    assert set(bag) == {"/semla/mask", "/semla/support_score", "/semla/class_map"}
    (_, classmap), = bag["/semla/class_map"]
    assert list(classmap.class_names) == list(CLASSES) and classmap.mask_encoding == "mono8"
    masks, scores = bag["/semla/mask"], bag["/semla/support_score"]
    assert len(masks) == len(scores) == 45
    sources = sorted(frames.values(), key=lambda f: f.index)
    for source, (ns, m), (ns2, s) in zip(sources, masks, scores, strict=True):
        assert ns == ns2 == source.log_ns
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == (source.sec, source.nanosec) == \
            (s.header.stamp.sec, s.header.stamp.nanosec)
        assert m.header.frame_id == "demo_camera" and m.encoding == "mono8" and (m.height, m.width) == (96, 128)
        assert math.isfinite(s.active_support) and s.active_adapters == 2 and s.top_adapter.startswith("demo-")
        png = np.asarray(Image.open(out / "drive" / "masks" / f"{source.index:06d}.png"))
        np.testing.assert_array_equal(m.data.reshape(96, 128), png)


def test_report_compares_per_image_per_cluster_and_debounced(finished):
    out, report = finished
    c = report["comparison"]["drive"]
    assert (c["frames"], c["labelled_frames"]) == (45, 45)
    assert c["fusions"]["per-image"] == 45 and c["fusions"]["per-cluster"] == len(report["clusters"])
    assert 1 <= c["fusions"]["debounced"] < 45
    for method in ("per-image", "per-cluster", "debounced"):
        assert 0.0 <= c["miou"][method] <= 1.0 and c["seconds"][method] > 0
        assert 0.0 <= c["agreement_with_per_image"][method] <= 1.0
    assert len(list((out / "drive" / "per_image_masks").glob("*.png"))) == 45
    text = (out / "report.md").read_text()
    assert "| drive | per-cluster |" in text and "SerdeError x2" in text
    rows = (out / "drive" / "frames.csv").read_text().splitlines()
    assert len(rows) == 46 and rows[0].startswith("index,name,sec,nanosec,cluster")


class Crash(RuntimeError):
    pass


class CrashingWorkers(LocalWorkers):
    """The real workers, stopped (as by a kill) after `embed_after` / `segment_after` results."""

    def __init__(self, build, embed_after=None, segment_after=None):
        super().__init__(build)
        self.embed_after, self.segment_after = embed_after, segment_after
        self.embedded = self.segmented = 0

    def embed(self, jobs, batch_size):
        for n, batch in enumerate(super().embed(jobs, batch_size)):
            if n == self.embed_after:
                raise Crash("killed while embedding")
            self.embedded += 1
            yield batch

    def segment(self, tasks):
        for n, result in enumerate(super().segment(tasks)):
            if n == self.segment_after:
                raise Crash("killed while segmenting")
            self.segmented += 1
            yield result


def test_an_interrupted_job_is_finished_by_a_rerun_with_the_same_result(world, finished):
    done_out, done_report = finished
    out = world["root"] / "resumed"
    rec = open_recording(world["root"] / "drive", "/demo/image", "/demo/ground_truth")
    settings = RelabelSettings(batch_size=8, cluster=ClusterSettings(min_size=3), threads=1, compare=False)
    build = world["build"]
    with pytest.raises(Crash):
        RelabelJob(build, [rec], out, settings, workers=CrashingWorkers(build, embed_after=2), progress=False).run()
    assert len(list((out / "drive" / "embeddings").glob("batch-*.npz"))) == 2
    with pytest.raises(Crash):
        RelabelJob(build, [rec], out, settings, workers=CrashingWorkers(build, segment_after=3), progress=False).run()
    assert not (out / "report.json").exists() and not (out / "drive" / "relabelled").exists()
    workers = CrashingWorkers(build)
    report = RelabelJob(build, [rec], out, settings, workers=workers, progress=False).run()
    batches = sum(math.ceil(c["frames"] / 8) for c in report["clusters"])
    assert workers.embedded == 0 and report["resumed"]["embedding_batches"] == 6     # 47 messages / 8
    assert workers.segmented == batches - 3                                         # 3 were done before the kill
    assert [c["id"] for c in report["clusters"]] == [c["id"] for c in done_report["clusters"]]
    for name in sorted(p.name for p in (done_out / "drive" / "masks").glob("*.png")):
        assert (out / "drive" / "masks" / name).read_bytes() == (done_out / "drive" / "masks" / name).read_bytes()
    ours, theirs = _bag_messages(out / "drive" / "relabelled"), _bag_messages(done_out / "drive" / "relabelled")
    assert [(ns, m.data.tobytes()) for ns, m in ours["/semla/mask"]] == \
        [(ns, m.data.tobytes()) for ns, m in theirs["/semla/mask"]]
    # A finished job rerun does nothing again; another job's settings on the same folder are refused.
    again = RelabelJob(build, [rec], out, settings, progress=False).run()
    assert again["resumed"]["clusters"] == len(report["clusters"]) and again["resumed"]["outputs"] == 1
    from semla_ros.relabel.state import JobMismatch

    other = RelabelSettings(batch_size=4, compare=False)
    with pytest.raises(JobMismatch, match=r"differs in: state.*--restart"):
        RelabelJob(build, [rec], out, other, progress=False).run()


def test_cli_on_an_image_folder_and_on_a_bag_without_the_topic(world, tmp_path, capsys):
    from semla_ros.cli.relabel import main
    from semla_ros.demo.export import export_domain

    folder = export_domain(tmp_path / "data", "night", range(500, 512))
    (tmp_path / "data" / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (folder / "images" / "night_00000505.png").write_bytes(b"broken")
    common = ["--model", str(world["config"]), "--allow-random-weights", "--library", str(world["library"]),
              "--quiet", "--threads", "1", "--min-cluster-size", "3", "--batch-size", "4"]
    assert main([str(folder), "--out", str(tmp_path / "out"), "--no-compare", *common]) == 0
    masks = sorted(p.stem for p in (tmp_path / "out" / "night" / "masks").glob("*.png"))
    assert len(masks) == 11 and "night_00000505" not in masks
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["recordings"]["night"]["output"]["kind"] == "png" and report["recordings"]["night"]["skipped"] == 1
    assert report["engine"]["classes"] == list(CLASSES)   # from the folder's classes.txt
    assert "# Relabelling report" in capsys.readouterr().out
    shutil.copytree(world["root"] / "drive", tmp_path / "bag")
    code = main([str(tmp_path / "bag"), "--out", str(tmp_path / "out2"), "--topic", "/camera/image", *common])
    err = capsys.readouterr().err
    assert code == 2 and "no topic '/camera/image'" in err and "'/demo/image'" in err
    code = main([str(folder), "--out", str(tmp_path / "out"), "--no-compare", *common[:-2], "--batch-size", "2"])
    assert code == 2 and "holds another relabelling job" in capsys.readouterr().err


def test_gaps_from_a_relabelling_job_export_frames_with_its_masks_as_pseudo_labels(world, finished, tmp_path, capsys):
    from semla_ros.cli.library import main as library_main

    out, _ = finished
    # Every frame counts as uncovered at this threshold: the proposals then hold all readable frames.
    code = library_main(["gaps", str(out), "--library", str(world["library"]), "--out", str(tmp_path / "p"),
                         "--max-relative-distance", "1e-6", "--min-cluster-size", "3", "--pseudo-labels", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == "relabel" and result["uncovered"] == result["frames"] == 45
    assert sum(p["frames"] for p in result["proposals"]) == 45
    folder = tmp_path / "p" / result["proposals"][0]["name"]
    assert "PSEUDO-LABELS" in (folder / "PSEUDO_LABELS.txt").read_text()
    assert json.loads((folder / "proposal.json").read_text())["labels"].startswith("PSEUDO-LABELS")
    recording = open_recording(world["root"] / "drive", "/demo/image")
    frames = {f.index: f for f in recording.frames() if hasattr(f, "image")}
    for image in sorted((folder / "images").glob("*.png"))[:5]:
        index = int(image.stem.split("__")[1])
        np.testing.assert_array_equal(np.asarray(Image.open(image)), frames[index].image)
        np.testing.assert_array_equal(np.asarray(Image.open(folder / "labels" / image.name)),
                                      np.asarray(Image.open(out / "drive" / "masks" / f"{index:06d}.png")))


def test_gaps_from_a_capture_folder_with_the_models_pseudo_labels(world, tmp_path):
    from semla_ros.core.capture import GapCapture
    from semla_ros.demo import world as demo_world
    from semla_ros.relabel import gaps
    from semla_ros.relabel.work import cluster_fusion

    build = world["build"]
    capture = GapCapture(tmp_path / "capture", 100, classes=CLASSES, navigator_id=build.navigator.id)
    images = [demo_world.render("fog", 900 + k).image for k in range(6)]
    for k, (image, e) in enumerate(zip(images, build.navigator.embed(images), strict=True)):
        assert capture.save(f"f{k}", image, e, {"index": k})
    proposals, info = gaps.from_capture(tmp_path / "capture", build.library, ClusterSettings(min_size=3))
    assert info["frames"] == 6 and [len(p.frames) for p in proposals] == [6]
    (proposal,) = proposals
    order = np.argsort(np.linalg.norm(build.library.centroids - proposal.centroid, axis=1))
    assert [n for n, _, _ in proposal.nearest] == [build.library.names[i] for i in order[:3]]
    written = gaps.export_proposals(proposals, tmp_path / "capture", tmp_path / "p", CLASSES,
                                    gaps.model_pseudo_labels(build, tmp_path / "capture"))
    folder = written[0]
    fusion = cluster_fusion(build.library, proposal.centroid, build.spec.settings)
    activate_fusion(build.segmenter, build.library, fusion)
    expected = build.predictor.predict(images[2]).class_ids
    build.segmenter.fuse_now([], [])
    label = np.asarray(Image.open(folder / "labels" / "f2.png"))
    assert (label == expected).mean() > 0.999 and (folder / "PSEUDO_LABELS.txt").is_file()
    from semla_ros.evaluation.dataset import open_domain

    assert len(list(open_domain(folder).pairs())) == 6   # a trainable domain folder as it is
