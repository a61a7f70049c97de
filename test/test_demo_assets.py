"""The demo asset build: official library layout, retrieval on held-out frames, adapters that help.

One tiny-budget build (4 domains) is shared by the tests of this file; the full demo build is the
same code with bigger budgets (see BuildParams and `python -m semla_ros.demo.build_assets`).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.fusion import WeightStager
from semla_ros.core.library import AdapterLibrary
from semla_ros.core.navigator import TowerNavigator
from semla_ros.core.targets import semla_target_modules
from semla_ros.demo import build_assets as ba
from semla_ros.demo import world
from semla_ros.evaluation.metrics import confusion_matrix, mean_iou

pytestmark = pytest.mark.slow   # the module's asset build takes minutes
DOMAINS = ("clear", "night", "fog", "tunnel")
SHIFTED = ("night", "fog", "tunnel")
PARAMS = dataclasses.replace(ba.TEST_PARAMS, domains=DOMAINS)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_cache")
    built, was_built = ba.ensure_assets(root, PARAMS, log=lambda _: None)
    assert was_built
    return built


@pytest.fixture(scope="module")
def heldout():
    """Frames no part of the build saw (a seed range of their own)."""
    seeds = range(ba.HELDOUT_SEED0 + 500_000, ba.HELDOUT_SEED0 + 500_000 + 10)
    return {d: world.dataset(d, seeds, PARAMS.size) for d in DOMAINS}


def test_library_is_in_the_official_semla_layout(assets):
    model = ba.load_demo_model(assets)
    targets = semla_target_modules(model)
    assert len(targets) == 42  # 4 visual + 1 text CLIP blocks x 5, 1 aggregator layer x 17
    for d in DOMAINS:
        name = ba.adapter_name(d)
        entry = assets.library / name
        config = json.loads((entry / "adapter_config.json").read_text())
        assert (config["peft_type"], config["r"], config["lora_alpha"], config["lora_dropout"]) == ("LORA", 8, 16, 0.0)
        assert sorted(config["target_modules"]) == sorted(targets)
        tensors = load_file(str(entry / "adapter_model.safetensors"))
        assert len(tensors) == 2 * len(targets)
        for t in targets:
            linear = model.get_submodule(t)
            assert tensors[f"base_model.model.{t}.lora_A.weight"].shape == (8, linear.in_features)
            assert tensors[f"base_model.model.{t}.lora_B.weight"].shape == (linear.out_features, 8)
        with np.load(entry / f"{name}_statistics.npz") as stats:
            centroid = stats["train_average_embedding"]
        assert centroid.shape == (1, model.config.embed_dim) and centroid.dtype == np.float32
    navigator = TowerNavigator(model)
    library = AdapterLibrary.open(assets.library, navigator_dim=navigator.dim, navigator_id=navigator.id)
    assert library.skipped == [] and sorted(library.names) == sorted(ba.adapter_name(d) for d in DOMAINS)


def test_cache_is_reused_and_keyed_by_parameters(assets):
    again, built = ba.ensure_assets(assets.root.parent, PARAMS, log=lambda _: None)
    assert not built and again.root == assets.root
    assert ba.cache_key(dataclasses.replace(PARAMS, seed=1)) != assets.root.name


def test_retrieval_picks_the_true_domain_for_heldout_frames(assets, heldout):
    """Top-1 of the node's own retrieval path (tower navigator + library centroids) >= 90%."""
    from semla_ros.core.retrieval import retrieve

    model = ba.load_demo_model(assets)
    navigator = TowerNavigator(model)
    library = AdapterLibrary.open(assets.library, navigator_dim=navigator.dim, navigator_id=navigator.id)
    hits = total = 0
    for d, (images, _) in heldout.items():
        for e in navigator.embed(list(images)):
            r = retrieve(e, library.centroids, top_k=1, temperature=0.05, metric="euclidean")
            hits += library.names[int(r.indices[0])] == ba.adapter_name(d)
            total += 1
    assert hits / total >= 0.9, f"top-1 {hits}/{total}"


def test_fused_adapter_beats_the_base_model_on_shifted_domains(assets, heldout):
    """Each domain's adapter, read back from disk and fused by the engine (not PEFT), improves
    mIoU on held-out frames of its shifted domain."""
    model = ba.load_demo_model(assets)
    predictor = CatSegPredictor(model, list(world.CLASS_NAMES))
    library = AdapterLibrary.open(assets.library)
    stager = WeightStager(model, library.target_modules)
    n = len(world.CLASS_NAMES)

    def score(images, labels):
        conf = sum(confusion_matrix(predictor.predict(img).class_ids, lab, n)
                   for img, lab in zip(images, labels, strict=True))
        return mean_iou(conf)

    gains = {}
    for d in SHIFTED:
        images, labels = heldout[d]
        base = score(images, labels)
        predictor.load_weights(stager.stage_fusion([library[ba.adapter_name(d)]], [1.0]).weights)
        adapted = score(images, labels)
        predictor.load_weights(stager.base_weights().weights)
        gains[d] = (base, adapted)
    assert all(a > b for b, a in gains.values()), gains
    # restoring is exact: the base model is back
    fresh = ba.load_demo_model(assets)
    for (k, v), (_, w) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_build_is_reproducible(tmp_path):
    """Same parameters, same code -> bit-identical weights, adapters and centroids."""
    params = dataclasses.replace(PARAMS, domains=("clear", "fog"), base_images=8, base_steps=2,
                                 adapter_images=8, adapter_steps=2, heldout_images=2, batch=4)
    a = ba.build(tmp_path / "a", params, log=lambda _: None)
    b = ba.build(tmp_path / "b", params, log=lambda _: None)
    for rel in ["model.safetensors", "loradb/demo-fog/adapter_model.safetensors",
                "loradb/demo-fog/demo-fog_statistics.npz", "loradb/demo-clear/adapter_config.json"]:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel


@pytest.mark.ros   # semla-demo: the node and the demo camera in their own processes
@pytest.mark.slow
def test_make_demo_end_to_end_swaps_at_the_domain_change(assets, ros_domain_id, tmp_path):
    """The real node and camera as separate processes on a short drive: a shift swap to the
    fog adapter happens inside the fog segment, none while it stays clear; summary + PNG.
    (fog: the tiny library's clearest shift; its relative threshold is half the median
    inter-centroid distance)"""
    from semla_ros.cli import demo

    out, summary = tmp_path / "demo.png", tmp_path / "demo.json"
    rc = demo.main(["--assets", str(assets.root), "--sequence", "clear:4,fog:6", "--out", str(out),
                    "--json", str(summary)])
    assert rc == 0
    numbers = json.loads(summary.read_text())
    shifts = [s for s in numbers["swaps"] if s["reason"] == "shift"]
    assert shifts and all(s["domain"] == "fog" for s in shifts), numbers["swaps"]
    assert shifts[0]["adapters"][0] == ba.adapter_name("fog")
    assert shifts[0]["since_change_s"] < 3.0
    rows = {r["domain"]: r for r in numbers["domains"]}
    assert rows["fog"]["masks"] > 20 and rows["fog"]["adapted_miou"] > rows["fog"]["unadapted_miou"]
    assert out.stat().st_size > 10_000


def test_a_build_finished_first_by_another_process_is_used_and_left_alone(assets, tmp_path, monkeypatch):
    """Two commands building the same assets at once: the one finishing second must not delete the first's
    folder (the other command may be reading it). The build itself is not under test here: it copies the
    module's assets, and "another process" finishes its copy of the target while ours runs."""
    import shutil

    target = tmp_path / ba.cache_key(PARAMS)

    def build(dest, params, log):
        shutil.copytree(assets.root, target)                 # the other process renames its build into place
        (target / "theirs").write_text("in use")
        shutil.copytree(assets.root, dest)

    monkeypatch.setattr(ba, "build", build)
    used, built = ba.ensure_assets(tmp_path, PARAMS, log=lambda _: None)
    assert built and used.root == target and (target / "theirs").read_text() == "in use"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]     # our temporary build is cleaned up
