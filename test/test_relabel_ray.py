"""Scale-out on Ray: `semla-relabel --ray` over two recordings, on a local Ray instance started here
(`ray.init(num_cpus=2)`), equals the single-process run: the same embeddings, clusters (global, across
both recordings), masks and output bags; the work ran in two actors, each with its own model copy."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from relabel_helpers import build_domain_library, demo_model_config, write_drive

ray = pytest.importorskip("ray", reason="ray not installed")
pytestmark = pytest.mark.slow


def test_ray_run_on_two_recordings_equals_the_single_process_run(tmp_path, capsys):
    from semla_ros.cli.relabel import main

    config = demo_model_config(tmp_path)
    build_domain_library(tmp_path / "library", config)
    write_drive(tmp_path / "morning", "clear:1.2,night:1.2")
    write_drive(tmp_path / "evening", "tunnel:1.2,clear:0.8", corrupt_after={5})
    common = [str(tmp_path / "morning"), str(tmp_path / "evening"), "--topic", "/demo/image",
              "--model", str(config), "--allow-random-weights", "--library", str(tmp_path / "library"),
              "--scope", "global", "--batch-size", "4", "--min-cluster-size", "3", "--no-compare", "--quiet",
              "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from semla_ros.relabel import ray_runner

        created = []
        original = ray_runner.RayWorkers.__init__

        def remember(self, *args, **kwargs):   # keep the workers to ask the actors who they are
            original(self, *args, **kwargs)
            created.append(self)
            created.append(ray.get([a.describe.remote() for a in self.actors]))

        ray_runner.RayWorkers.__init__ = remember
        try:
            assert main([*common, "--out", str(tmp_path / "ray"), "--ray", "--ray-workers", "2"]) == 0
        finally:
            ray_runner.RayWorkers.__init__ = original
    finally:
        ray.shutdown()
    actors = created[1]
    assert len({a["pid"] for a in actors}) == 2 and os.getpid() not in {a["pid"] for a in actors}
    assert all(a["threads"] == 1 for a in actors)

    local, remote = tmp_path / "local", tmp_path / "ray"
    for rec, frames in (("morning", 24), ("evening", 20)):
        for batch in sorted((local / rec / "embeddings").glob("*.npz")):
            a, b = np.load(batch), np.load(remote / rec / "embeddings" / batch.name)
            for key in ("indices", "names", "sec", "nanosec", "embeddings", "skipped_indices"):
                np.testing.assert_array_equal(a[key], b[key])
        masks = sorted(p.name for p in (local / rec / "masks").glob("*.png"))
        assert len(masks) == frames
        for name in masks:
            assert (local / rec / "masks" / name).read_bytes() == (remote / rec / "masks" / name).read_bytes()
        assert (local / rec / "frames.csv").read_text() == (remote / rec / "frames.csv").read_text()
        assert (local / rec / "relabelled" / "metadata.yaml").is_file() and (remote / rec / "relabelled").is_dir()
    ours, theirs = (json.loads((d / "clusters.json").read_text()) for d in (local, remote))
    assert ours == theirs
    assert any(len(c["frames"]) == 2 for c in ours["clusters"]), "global clusters span both recordings"
    report = json.loads((remote / "report.json").read_text())
    assert report["recordings"]["evening"]["skipped"] == 1 and report["settings"]["scope"] == "global"
