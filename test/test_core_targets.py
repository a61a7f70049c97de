"""The SemLA target rule resolves to the official wrapped-module lists (reference + fixture A)."""
import json

import pytest

from semla_ros.catseg.build import build_catseg
from semla_ros.core.targets import semla_target_modules


@pytest.mark.parametrize("config, key, count", [("vitb16_384", "vitb_384", 154), ("vitl14_336", "vitl_336", 214)])
def test_matches_the_official_list(reference_dir, config, key, count):
    reference = json.loads((reference_dir / "lora_targets.json").read_text())[key]
    official = [t["name"] for t in reference["targets"] if t["exists"]]
    ours = semla_target_modules(build_catseg(config, device="meta"))
    assert len(ours) == count and set(ours) == set(official)


def test_matches_the_fixture_adapters(fixture_dir):
    listed = json.loads((fixture_dir / "loradb" / "fog" / "adapter_config.json").read_text())["target_modules"]
    assert set(semla_target_modules(build_catseg("tiny"))) == set(listed)
