"""The evaluation protocol on a tiny world: every method runs, leave-one-out excludes the target."""
import json

import numpy as np
import pytest
import torch
from eval_world import DOMAINS, random_library, save_model, small_model

from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.core.library import AdapterLibrary
from semla_ros.core.navigator import TowerNavigator
from semla_ros.core.settings import SegmenterSettings
from semla_ros.demo import world
from semla_ros.demo.export import export_demo_world
from semla_ros.evaluation.dataset import open_dataset
from semla_ros.evaluation.metrics import ConfusionAccumulator
from semla_ros.evaluation.protocol import LIBRARY_METHODS, METHODS, Evaluator, ProtocolSettings

pytestmark = pytest.mark.slow   # its module fixtures train and evaluate the demo world (~30 s)

IMAGES = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalworld")
    model = small_model()
    navigator = TowerNavigator(model)
    data = open_dataset(export_demo_world(tmp / "data", DOMAINS, IMAGES))
    library = AdapterLibrary.open(random_library(model, navigator, data, tmp / "loradb"),
                                  navigator_id=navigator.id, model=model)
    assert library.names == DOMAINS and not library.skipped
    predictor = CatSegPredictor(model, list(world.CLASS_NAMES))
    return dict(tmp=tmp, model=model, navigator=navigator, data=data, library=library, predictor=predictor)


def run(setup, **settings):
    ev = Evaluator(setup["predictor"], setup["library"], setup["navigator"],
                   ProtocolSettings(segmenter=SegmenterSettings(top_k=2, warmup_frames=1), **settings))
    return ev, ev.run(setup["data"])


@pytest.fixture(scope="module")
def full(setup):
    """All methods, leave-one-out, run once for the module; also the weights before the run."""
    before = {k: v.clone() for k, v in setup["model"].state_dict().items()}
    _, res = run(setup, leave_one_out=True)
    return before, res


def test_every_method_runs_and_restores_the_base_weights(setup, full):
    before, res = full
    for method in METHODS:
        for domain in DOMAINS:
            score = res.scores[method][domain]
            assert score.available and score.images == IMAGES and 0.0 <= score.miou <= 1.0
    assert len(res.images) == len(METHODS) * len(DOMAINS) * IMAGES
    after = setup["model"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # zero-shot is the plain base model: recompute one domain by hand
    acc = ConfusionAccumulator(len(world.CLASS_NAMES))
    for image, label in setup["data"]["fog"].pairs():
        acc.add(setup["predictor"].predict(image).class_ids, label)
    assert res.scores["zero-shot"]["fog"].miou == pytest.approx(acc.miou)
    # the adapters do change the segmentation (otherwise the comparison would be vacuous)
    assert any(res.scores[m][d].miou != res.scores["zero-shot"][d].miou for m in LIBRARY_METHODS for d in DOMAINS)


def test_leave_one_out_never_uses_the_target_adapter(full):
    _, res = full
    for r in res.images:
        if r.method in ("uniform", "semla", "semla-debounced"):
            assert r.domain not in r.adapters, r
            assert r.adapters, r  # something was fused
    for method in ("uniform", "semla", "semla-debounced"):
        for d in DOMAINS:
            assert res.contributions[method][d][d] == 0.0
    assert res.candidates == {d: [n for n in DOMAINS if n != d] for d in DOMAINS}
    debounced = [r for r in res.images if r.method == "semla-debounced"]
    assert all(np.isfinite(r.support) for r in debounced)
    oracle = [r for r in res.images if r.method == "oracle"]
    assert all(r.adapters == [r.domain] and r.weights == [1.0] for r in oracle)


def test_without_leave_one_out_the_own_centroid_is_retrieved(setup):
    # Centroids are the means of these very images: with the target allowed, SemLA must pick it.
    _, res = run(setup, leave_one_out=False, methods=("semla",))
    top1 = [r.adapters[0] == r.domain for r in res.images]
    assert sum(top1) >= len(top1) - 1
    assert all(len(r.adapters) == 2 and abs(sum(r.weights) - 1) < 1e-9 for r in res.images)


def test_hmean_excludes_and_json(full):
    _, res = full
    table = res.miou_table()
    h_all, h_ex = res.hmean(), res.hmean(exclude=["clear"])
    vals = [table["uniform"][d] for d in ("fog", "night")]
    assert h_ex["uniform"] == pytest.approx(2 / sum(1 / v for v in vals))
    assert h_all["uniform"] != h_ex["uniform"]
    blob = json.loads(json.dumps(res.to_json(exclude=["clear"])))
    assert blob["hmean_excludes"] == ["clear"] and set(blob["miou"]) == set(METHODS)


def test_target_adapter_found_by_metadata_or_semla_prefix(setup, tmp_path):
    import shutil

    from semla_ros.core.library import statistics_file

    root = tmp_path / "renamed"
    for name in DOMAINS:   # SemLA-style names: "demo-fog" etc.
        shutil.copytree(setup["library"].root / name, root / f"demo-{name}")
        (root / f"demo-{name}" / statistics_file(name)).rename(root / f"demo-{name}" / statistics_file(f"demo-{name}"))
    lib = AdapterLibrary.open(root, model=setup["model"])
    ev = Evaluator(setup["predictor"], lib, setup["navigator"], ProtocolSettings(methods=("oracle",)))
    assert [ev.target_adapter(d) for d in DOMAINS] == [f"demo-{d}" for d in DOMAINS]
    assert [lib.names[i] for i in ev.candidates("fog")] == ["demo-clear", "demo-night"]
    ev = Evaluator(setup["predictor"], lib, setup["navigator"], ProtocolSettings(methods=("oracle",)),
                   adapter_for={"fog": "demo-night"})
    assert ev.target_adapter("fog") == "demo-night"


def test_cli_run_writes_table_json_and_figures(setup, tmp_path):
    from semla_ros.cli.evaluate import main

    config, weights = save_model(setup["model"], tmp_path / "model")
    out = tmp_path / "out"
    rc = main(["run", "--data", str(setup["data"]["fog"].path.parent), "--model", str(config), "--checkpoint",
               str(weights), "--library", f"std={setup['library'].root}", "--out", str(out), "--top-k", "2",
               "--exclude-from-hmean", "clear", "--quiet", "--max-images", "1",
               "--methods", "zero-shot", "oracle", "semla", "semla-debounced"])
    assert rc == 0
    md = (out / "results.md").read_text()
    assert "| zero-shot |" in md and "| semla |" in md and "clear*" in md
    blob = json.loads((out / "results.json").read_text())
    assert blob["summary"]["hmean_excludes"] == ["clear"]
    for name in ("support_vs_miou_semla.png", "contributions_semla.png", "support_vs_miou_semla-debounced.png"):
        png = out / "figures" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_settings_are_clear_errors(setup):
    with pytest.raises(ValueError, match="unknown methods"):
        ProtocolSettings(methods=("semla", "magic"))
    with pytest.raises(ValueError, match="need a non-empty adapter library"):
        Evaluator(setup["predictor"], None, setup["navigator"], ProtocolSettings(methods=("semla",)))


def test_per_image_replay_fuses_every_frame_for_its_own_embedding(setup):
    """Per-image SemLA is the segmenter's `trigger: frame`, whatever the settings it starts from say about
    warm-up, embedding stride or trigger: each frame swaps in the top-K retrieved for its own embedding."""
    from semla_ros.core.retrieval import retrieve
    from semla_ros.evaluation.replay import SegmenterReplay, per_image

    library, navigator, model = setup["library"], setup["navigator"], setup["model"]
    settings = per_image(SegmenterSettings(top_k=2, warmup_frames=5, embed_every_n=3, trigger="distance"))
    images = [image for folder in setup["data"].values() for image, _ in folder.pairs()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with SegmenterReplay(setup["predictor"], library, navigator, settings) as replay:
            for i, image in enumerate(images):
                out = replay.process(image, i / 10.0, stamp=i)
                r = retrieve(navigator.embed([image])[0], library.centroids, 2, settings.temperature, settings.metric)
                assert out.fusion is not None and out.fusion.ok and out.fusion.stamp == i
                assert out.fusion.adapters == [library.names[j] for j in r.indices]
                np.testing.assert_allclose(out.fusion.weights, r.weights, rtol=1e-9)
            assert replay.fusions == len(images) > 1
    finally:
        model.load_state_dict(before)
