"""TorchBackend: the predictor's path with the backend's forward gives the predictor's masks; weights the
predictor holds are what the backend runs."""
import numpy as np
import pytest
import torch

from semla_ros.backends.base import Backend
from semla_ros.backends.torch_backend import TorchBackend
from semla_ros.catseg.build import build_catseg
from semla_ros.catseg.predictor import CatSegPredictor

CLASSES = ["road", "sky", "car"]


def image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("sliding", [False, True])
def test_predict_through_the_backend_equals_the_predictor(sliding):
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES, sliding_window=sliding)
    backend = TorchBackend(predictor)
    assert isinstance(backend, Backend)
    views = predictor.sliding_views(image()) if sliding else predictor.preprocess(image())[0]
    logits = backend.forward(views, predictor.text_embeddings())
    assert logits.shape == ((5 if sliding else 1), 3, 96, 96) and logits.dtype == torch.float32
    result = predictor.predict(image(), forward=backend.forward)
    expected = predictor.predict(image())
    np.testing.assert_array_equal(result.class_ids, expected.class_ids)
    torch.testing.assert_close(result.probs, expected.probs)


def test_weights_loaded_by_the_predictor_reach_the_backend_and_the_text():
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES)
    backend = TorchBackend(predictor)
    views = predictor.preprocess(image())[0]
    before_text = predictor.text_embeddings().clone()
    before_logits = backend.forward(views, before_text)
    text_fc = "sem_seg_head.predictor.clip_model.transformer.resblocks.0.mlp.c_fc"
    agg = "sem_seg_head.predictor.transformer.layers.0.attention.MLP.0"
    model = predictor.model
    g = torch.Generator().manual_seed(1)
    new = {n: model.get_submodule(n).weight + 0.1 * torch.randn(model.get_submodule(n).weight.shape, generator=g)
           for n in (text_fc, agg)}  # random: a constant shift is invisible after LayerNorm
    predictor.load_weights(new)
    backend.update_weights(new)
    assert all(torch.equal(model.get_submodule(n).weight, w) for n, w in new.items())
    assert (predictor.text_embeddings() - before_text).abs().max() > 1e-4   # the cache saw the new weights
    assert (backend.forward(views, before_text) - before_logits).abs().max() > 1e-4


def test_precision_checks():
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES)
    with pytest.raises(ValueError, match="CUDA"):
        TorchBackend(predictor, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        TorchBackend(predictor, precision="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs a CUDA GPU (none here)")
def test_fp16_on_gpu_is_close_to_fp32():
    torch.manual_seed(0)
    predictor = CatSegPredictor(build_catseg("tiny"), CLASSES, device="cuda")
    text = predictor.text_embeddings()
    views = predictor.preprocess(image())[0]
    full = TorchBackend(predictor).forward(views, text)
    half = TorchBackend(predictor, precision="fp16").forward(views, text)
    assert (full - half).abs().max() < 0.05
