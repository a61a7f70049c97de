"""Config registry and fixture-config parsing."""
from __future__ import annotations

import dataclasses
import json

import pytest

from semla_ros.catseg import CatSegConfig, build_catseg, get_config


def test_tiny_is_fixture_a(fixture_dir):
    from_fixture = CatSegConfig.from_fixture(json.loads((fixture_dir / "config.json").read_text()))
    assert dataclasses.replace(from_fixture, name="tiny") == get_config("tiny")


@pytest.mark.parametrize("name, width, grid, clip_size", [("vitb16_384", 768, 14, 384), ("vitl14_336", 1024, 24, 336)])
def test_named_configs(name, width, grid, clip_size):
    model = build_catseg(name, device="meta")
    visual = model.clip_model.visual
    assert visual.conv1.out_channels == width and visual.pretrain_grid == grid
    assert model.config.inference.clip_resolution == clip_size
    assert model.config.output_resolution == (96, 96)


def test_unknown_name_and_bad_dimensions_are_clear_errors():
    with pytest.raises(ValueError, match="unknown CAT-Seg config 'vit_huge'"):
        build_catseg("vit_huge")
    tiny = get_config("tiny")
    with pytest.raises(ValueError, match="tap cannot sit on the last"):
        dataclasses.replace(tiny, vision=dataclasses.replace(tiny.vision, tap_blocks=(0, 3)))
    with pytest.raises(ValueError, match="CLIP grid"):
        dataclasses.replace(tiny, inference=dataclasses.replace(tiny.inference, clip_resolution=336))


def test_config_dict_round_trip_and_json_path(tmp_path):
    import json

    from semla_ros.catseg.build import build_catseg, get_config
    from semla_ros.catseg.config import CatSegConfig

    for name in ("tiny", "vitb16_384", "vitl14_336"):
        config = get_config(name)
        text = json.dumps(config.to_dict())
        assert CatSegConfig.from_dict(json.loads(text)) == config
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(get_config("tiny").to_dict()))
    assert build_catseg(str(path)).config == get_config("tiny")
    bad = get_config("tiny").to_dict()
    bad["vision"]["colour"] = 3
    with pytest.raises(ValueError, match="unknown VisionConfig fields"):
        CatSegConfig.from_dict(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        get_config(str(tmp_path / "missing.json"))
