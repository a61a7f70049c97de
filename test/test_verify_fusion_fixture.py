"""Fixture A, fusion part: SemLA / uniform / oracle merges reproduce the official numbers."""
import json

import numpy as np
import pytest
import torch

from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.checkpoint import load_catseg_weights
from semla_ros.catseg.config import CatSegConfig
from semla_ros.catseg.predictor import CatSegPredictor
from semla_ros.verify.catseg_fixture import read_rgb
from semla_ros.verify.fusion_fixture import check_fusion_fixture


@pytest.mark.slow
def test_fusion_fixture_matches_and_leaves_the_base_model(fixture_dir):
    config = json.loads((fixture_dir / "config.json").read_text())
    model = build_catseg(CatSegConfig.from_fixture(config))
    load_catseg_weights(model, fixture_dir / "model.safetensors")
    predictor = CatSegPredictor(model, config["text"]["class_names"], official_postprocess=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    rows = check_fusion_fixture(fixture_dir, model, predictor)

    bad = [r for r in rows if not r.ok]
    assert not bad, bad
    names = {r.name for r in rows}
    for key in ("semla_weights", "semla_adapters", "semla_logits", "semla_text_embeddings", "semla_sem_seg",
                "semla_sliding_sem_seg", "uniform_logits", "uniform_text_embeddings", "oracle_logits",
                "oracle_text_embeddings"):
        assert key in names
    by_name = {r.name: r for r in rows}
    assert by_name["semla_weights"].tolerance <= 1e-6 and by_name["semla_logits"].tolerance <= 1e-4

    # the model is back to its base weights, and the fusions were far from the base (the check can fail)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    fusion = np.load(fixture_dir / "fusion_expected.npz")
    base = predictor.logits(read_rgb(fixture_dir / "input.png")).numpy()
    np.testing.assert_allclose(base, np.load(fixture_dir / "expected.npz")["logits"], atol=1e-4, rtol=0)
    for case in ("semla", "uniform", "oracle"):
        assert np.abs(fusion[f"{case}_logits"] - base).max() > 1e-2
