"""OpenClipNavigator with a tiny open_clip config (random weights): batching, checkpoints, no downloads."""
import numpy as np
import open_clip
import pytest
import torch
from openclip_helpers import register_tiny_openclip

from semla_ros.core.navigator import Navigator, OpenClipNavigator

TINY = "SemlaTinyNav"


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    return register_tiny_openclip(tmp_path_factory.mktemp("oc"), TINY)


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(40 + 7 * i, 50 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


def test_random_weights_embed_batched_and_normalised(tiny_config):
    torch.manual_seed(0)
    nav = OpenClipNavigator(tiny_config, pretrained=None, image_size=32, batch_size=2)
    assert isinstance(nav, Navigator) and nav.dim == 16 and "random" in nav.id and "raw" in nav.id
    imgs = images(5)
    e = nav.embed(imgs)
    assert e.shape == (5, 16) and e.dtype == np.float32 and np.all(np.isfinite(e))
    assert not np.allclose(np.linalg.norm(e, axis=1), 1.0)       # projected, un-normalised like SemLA
    one_by_one = np.concatenate([nav.embed([im]) for im in imgs])
    np.testing.assert_allclose(e, one_by_one, rtol=1e-5, atol=1e-6)
    assert np.abs(e[0] - e[1]).max() > 1e-4                       # different images, different embeddings
    nav.normalize = True
    np.testing.assert_allclose(np.linalg.norm(nav.embed(imgs), axis=1), 1.0, rtol=1e-5)


def test_local_checkpoint_reproduces_the_model(tiny_config, tmp_path):
    torch.manual_seed(1)
    nav = OpenClipNavigator(tiny_config, pretrained=None, image_size=32)
    ckpt = tmp_path / "tiny.pt"
    torch.save(nav.model.state_dict(), ckpt)
    torch.manual_seed(2)
    again = OpenClipNavigator(tiny_config, pretrained=str(ckpt), image_size=32)
    assert "tiny.pt" in again.id
    np.testing.assert_array_equal(nav.embed(images(2)), again.embed(images(2)))


def test_missing_weights_are_clear_errors_and_nothing_is_downloaded(tiny_config, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        OpenClipNavigator(tiny_config, pretrained=None, checkpoint=tmp_path / "nope.safetensors")
    monkeypatch.setenv("HOME", str(tmp_path))
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_network)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", no_network)
    with pytest.raises(FileNotFoundError, match="not in the local cache.*ViT-B-32"):
        OpenClipNavigator("ViT-B-32", pretrained="openai")
    with pytest.raises(ValueError, match="no pretrained tag"):
        OpenClipNavigator(tiny_config, pretrained="openai")


def test_bad_images_are_rejected(tiny_config):
    nav = OpenClipNavigator(tiny_config, pretrained=None, image_size=32)
    for bad in ([np.zeros((8, 8), np.uint8)], [np.zeros((8, 8, 3), np.float32)], [], np.zeros((8, 8, 3), np.uint8)):
        with pytest.raises(ValueError):
            nav.embed(bad)


def test_tower_navigator_is_a_frozen_copy_of_the_catseg_tower():
    from semla_ros.catseg.build import build_catseg
    from semla_ros.core.navigator import TowerNavigator

    torch.manual_seed(0)
    model = build_catseg("tiny")
    nav = TowerNavigator(model)
    assert isinstance(nav, Navigator) and nav.dim == 48 and nav.id.startswith("tower:tiny:")
    imgs = images(3)
    e = nav.embed(imgs)
    assert e.shape == (3, 48) and e.dtype == np.float32 and np.abs(e[0] - e[1]).max() > 1e-4
    # same as the live tower's own CLS path on the same preprocessing
    with torch.no_grad():
        live = model.clip_model.encode_image(nav._prepare(imgs[0])).numpy()
    np.testing.assert_allclose(e[:1], live, rtol=1e-5, atol=1e-6)
    # fusing into the live model does not move the navigator; the id follows the weights
    with torch.no_grad():
        model.clip_model.visual.transformer.resblocks[0].mlp.c_fc.weight.add_(0.5)
    np.testing.assert_array_equal(nav.embed(imgs), e)
    assert TowerNavigator(model).id != nav.id and TowerNavigator(model).id == TowerNavigator(model).id


def test_navigator_specs_parse_and_reject():
    from semla_ros.core.navigator import NavigatorSpec

    assert NavigatorSpec.parse("tower") == NavigatorSpec("tower")
    assert NavigatorSpec.parse("openclip:ViT-L-14/openai") == NavigatorSpec("openclip", "ViT-L-14", "openai", None)
    assert NavigatorSpec.parse("openclip:ViT-L-14//m/ViT-L-14.pt") == NavigatorSpec("openclip", "ViT-L-14", None,
                                                                                    "/m/ViT-L-14.pt")
    assert NavigatorSpec.parse("openclip:ViT-B-32/laion2b_s34b_b79k=/m/b32.bin") == NavigatorSpec(
        "openclip", "ViT-B-32", "laion2b_s34b_b79k", "/m/b32.bin")
    for bad in ("clip:ViT-L-14/openai", "openclip:ViT-L-14", "openclip:/openai", "openclip:ViT-L-14/=x", ""):
        with pytest.raises(ValueError):
            NavigatorSpec.parse(bad)


@pytest.mark.slow
def test_local_openai_checkpoint_builds_open_clips_quickgelu_model(tmp_path):
    """`openclip:MODEL/PATH` of an OpenAI-tagged model must be open_clip's own `MODEL` + `openai` settings
    (QuickGELU, OpenAI normalisation), not the plain GELU config (the bug: 0.7 % embedding error)."""
    from PIL import Image

    from semla_ros.core.navigator import build_navigator

    torch.manual_seed(0)
    reference, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=None, force_quick_gelu=True, image_mean=open_clip.OPENAI_DATASET_MEAN,
        image_std=open_clip.OPENAI_DATASET_STD)
    reference.eval()
    ckpt = tmp_path / "ViT-B-32.pt"
    torch.save(reference.state_dict(), ckpt)
    nav = build_navigator(f"openclip:ViT-B-32/{ckpt}")
    assert nav.id.startswith("open_clip:ViT-B-32:openai:")   # a file holding the openai weights is that tag
    imgs = images(2, seed=3)
    with torch.no_grad():
        expected = reference.encode_image(torch.stack([preprocess(Image.fromarray(a)) for a in imgs])).numpy()
    np.testing.assert_allclose(nav.embed(imgs), expected, rtol=1e-4, atol=1e-5)
    gelu = OpenClipNavigator("ViT-B-32", pretrained=None, checkpoint=ckpt)    # the plain config: not the same
    assert np.abs(gelu.embed(imgs) - expected).max() > 1e-3
