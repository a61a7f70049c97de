"""CatSegPredictor: text cache life cycle, overrides, post-processing geometry, input validation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from semla_ros.catseg import CatSegPredictor, build_catseg, get_config
from semla_ros.catseg.tokenizer import class_prompts, tokenize_class_names

TEXT_PARAM = "sem_seg_head.predictor.clip_model.transformer.resblocks.1.mlp.c_fc.weight"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(7)
    return build_catseg("tiny")


@pytest.fixture
def predictor(model):
    return CatSegPredictor(model, ["sky", "road, street", "car"])


def test_prompts_use_the_template_and_first_synonym():
    assert class_prompts(["road, street", "traffic sign"]) == [
        "A photo of a road in the scene", "A photo of a traffic sign in the scene"]


def test_text_embeddings_are_cached_and_normalised(predictor, model):
    first = predictor.text_embeddings()
    assert first.shape == (3, 48)
    assert torch.allclose(first.norm(dim=-1), torch.ones(3), atol=1e-6)
    assert predictor.text_embeddings() is first
    expected = model.encode_text(tokenize_class_names(["sky", "road", "car"]))
    assert torch.allclose(first, expected, atol=1e-6)


def test_vocabulary_change_invalidates_the_cache(predictor, model):
    before = predictor.text_embeddings()
    predictor.set_classes(["person", "tree"])
    after = predictor.text_embeddings()
    assert after.shape == (2, 48)
    assert torch.allclose(after, model.encode_text(tokenize_class_names(["person", "tree"])), atol=1e-6)
    assert predictor.class_names == ["person", "tree"]
    assert before.shape == (3, 48)


def test_weights_written_through_load_weights_replace_the_text_cache(predictor, model):
    module = TEXT_PARAM[: -len(".weight")]
    original = model.get_parameter(TEXT_PARAM).detach().clone()
    before = predictor.text_embeddings()
    try:
        predictor.load_weights({module: original * 1.5})          # no embeddings given: recomputed on demand
        after = predictor.text_embeddings()
        assert after is not before and not torch.allclose(after, before, atol=1e-4)
        assert torch.allclose(after, model.encode_text(predictor.tokens), atol=1e-6)
        given = torch.nn.functional.normalize(torch.randn(3, 48), dim=-1)
        predictor.load_weights({module: original * 2.0}, given, predictor.class_names)
        assert torch.equal(predictor.text_embeddings(), given)    # installed as computed for these weights
        predictor.load_weights({module: original}, given, ["other", "vocabulary"])
        assert not torch.equal(predictor.text_embeddings(), given)  # for another vocabulary: not installed
        with pytest.raises(ValueError, match=r"\(3, 48\)"):
            predictor.load_weights({module: original}, torch.randn(4, 48), predictor.class_names)
    finally:
        predictor.load_weights({module: original})
    assert torch.allclose(predictor.text_embeddings(), before, atol=1e-6)


def test_writes_outside_the_predictor_need_an_explicit_invalidation(predictor, model):
    param = model.get_parameter(TEXT_PARAM)
    original = param.detach().clone()
    before = predictor.text_embeddings()
    try:
        with torch.no_grad():
            param.mul_(1.5)
        assert predictor.text_embeddings() is before              # the documented rule: one writer
        predictor.invalidate_text_cache()
        assert torch.allclose(predictor.text_embeddings(), model.encode_text(predictor.tokens), atol=1e-6)
    finally:
        with torch.no_grad():
            param.copy_(original)
        predictor.invalidate_text_cache()


def test_visual_weight_change_keeps_the_text_cache(predictor, model):
    first = predictor.text_embeddings()
    with torch.no_grad():
        model.clip_model.visual.ln_post.bias.add_(0.0)
    assert predictor.text_embeddings() is first


def test_explicit_invalidation_recomputes(predictor):
    first = predictor.text_embeddings()
    predictor.invalidate_text_cache()
    second = predictor.text_embeddings()
    assert second is not first and torch.equal(first, second)


def test_overrides_compute_with_substituted_weights_without_touching_model_or_cache(predictor, model):
    cached = predictor.text_embeddings()
    param = model.get_parameter(TEXT_PARAM)
    original = param.detach().clone()
    new_value = original * 1.5 + 0.01
    overridden = predictor.text_embeddings({TEXT_PARAM: new_value,
                                            "upsample1.bias": torch.zeros(256)})  # non-text: no effect on text
    assert torch.equal(param, original)
    assert predictor.text_embeddings() is cached
    with torch.no_grad():
        param.copy_(new_value)
    try:
        assert torch.allclose(overridden, model.encode_text(predictor.tokens), atol=1e-6)
    finally:
        with torch.no_grad():
            param.copy_(original)
    assert not torch.allclose(overridden, cached, atol=1e-4)
    with pytest.raises(KeyError, match="not parameters"):
        predictor.text_embeddings({"no.such.parameter": new_value})
    with pytest.raises(ValueError, match="shape"):
        predictor.text_embeddings({TEXT_PARAM: new_value[:3]})


def _step_logits(column: int, classes: int = 2) -> torch.Tensor:
    """Logits whose class 1 wins right of map column `column`, class 0 left of it."""
    logits = torch.full((1, classes, 96, 96), -4.0)
    logits[0, 0, :, :column] = 4.0
    logits[0, 1, :, column:] = 4.0
    return logits


def _boundary(probs: torch.Tensor) -> int:
    ids = probs.argmax(dim=0)[0]
    return int((ids == 1).nonzero()[0])


@pytest.mark.parametrize("size, padded, correct_col, official_col", [
    ((40, 50), (64, 64), 32, 48),     # smaller than the map: official crops a corner of the map
    ((100, 150), (128, 160), 80, 75),  # larger: official stretches the padded border into the image
])
def test_correct_and_official_postprocess(model, size, padded, correct_col, official_col):
    """Map column 48 is the middle of the padded image: the correct output puts it at padded_width / 2."""
    correct = CatSegPredictor(model, ["a", "b"])
    official = CatSegPredictor(model, ["a", "b"], official_postprocess=True)
    logits = _step_logits(48)
    assert correct.preprocess(np.zeros((*size, 3), np.uint8))[1] == padded
    probs = correct.postprocess(logits, size, padded)
    probs_official = official.postprocess(logits, size, padded)
    assert probs.shape == probs_official.shape == (2, *size)
    assert abs(_boundary(probs) - correct_col) <= 1
    assert abs(_boundary(probs_official) - official_col) <= 1
    if size[0] < 96:  # official "resize" is an identity on the cropped map corner
        assert torch.equal(probs_official, logits[0, :, :size[0], :size[1]].sigmoid())


def test_predict_whole_image_small_input(model):
    predictor = CatSegPredictor(model, ["sky", "road"])
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    result = predictor.predict(image)
    assert result.probs.shape == (2, 50, 70)
    assert result.class_ids.shape == (50, 70) and result.class_ids.dtype == np.int64
    assert np.array_equal(result.class_ids, result.probs.argmax(dim=0).numpy())
    logits = predictor.logits(image)
    _, padded = predictor.preprocess(image)
    assert torch.allclose(predictor.postprocess(logits, (50, 70), padded), result.probs, atol=1e-6)


@pytest.mark.slow
def test_predict_batch_equals_predict_per_image(model):
    predictor = CatSegPredictor(model, ["sky", "road"])
    images = np.random.default_rng(4).integers(0, 255, (3, 50, 70, 3), dtype=np.uint8)
    batch = predictor.predict_batch(images, batch_size=2)
    assert batch.shape == (3, 50, 70)
    for image, ids in zip(images, batch, strict=True):
        np.testing.assert_array_equal(ids, predictor.predict(image).class_ids)


def test_predict_through_another_forward_is_the_same_path(model):
    predictor = CatSegPredictor(model, ["sky", "road"])
    image = np.random.default_rng(5).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    calls = []

    def forward(views, text):
        calls.append(tuple(views.shape))
        return model(views, text)

    np.testing.assert_array_equal(predictor.predict(image, forward=forward).class_ids,
                                  predictor.predict(image).class_ids)
    assert calls == [(1, 3, 384, 384)]


def test_predict_sliding_window(model):
    predictor = CatSegPredictor(model, ["sky", "road"], sliding_window=True)
    image = np.random.default_rng(1).integers(0, 255, (30, 41, 3), dtype=np.uint8)
    result = predictor.predict(image)
    assert result.probs.shape == (2, 30, 41) and result.class_ids.shape == (30, 41)
    assert float(result.probs.min()) >= 0.0 and float(result.probs.max()) <= 1.0


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32), np.zeros((0, 8, 3), np.uint8)])
def test_bad_images_are_rejected(predictor, bad):
    with pytest.raises(ValueError, match="image"):
        predictor.predict(bad)


@pytest.mark.parametrize("names", [[], "road", ["road", ""]])
def test_bad_vocabularies_are_rejected_and_keep_the_old_one(predictor, names):
    with pytest.raises((ValueError, TypeError)):
        predictor.set_classes(names)
    assert predictor.class_names == ["sky", "road, street", "car"]


def test_more_classes_than_pad_len_keeps_the_best_and_sets_the_rest_to_minus_100():
    torch.manual_seed(3)
    config = get_config("tiny")
    config = dataclasses.replace(config, aggregator=dataclasses.replace(config.aggregator, pad_len=4))
    model = build_catseg(config)
    predictor = CatSegPredictor(model, ["sky", "road", "car", "tree", "person", "bus"])
    image = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    logits = predictor.logits(image)[0]
    kept = [i for i in range(6) if not torch.all(logits[i] == -100.0)]
    assert len(kept) == 4
    # the kept classes get exactly what a run with only those classes (no truncation, no padding) gives
    subset = predictor.text_embeddings()[kept]
    assert torch.allclose(predictor.logits(image, subset)[0], logits[kept], atol=1e-4)
    # and they are the 4 with the highest maximum cosine similarity
    with torch.no_grad():
        x, _ = predictor.preprocess(image)
        dense = model.image_features(x).dense
        best = model.cost_volume(dense, predictor.text_embeddings())[0, 0].flatten(1).amax(dim=1)
    assert sorted(kept) == sorted(best.topk(4).indices.tolist())
