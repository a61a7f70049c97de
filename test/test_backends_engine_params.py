"""The engine's parameter probe is remembered per architecture: a second start reads it instead of running a
forward and a backward of the network (what kept a cached engine's start a second longer than PyTorch's)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from semla_ros.backends.engine_cache import ArtifactCache
from semla_ros.backends.engine_params import (
    PARAMS_FILE,
    cached_engine_parameter_names,
    engine_parameter_names,
    engine_params_key,
)
from semla_ros.catseg.build import build_catseg, get_config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_catseg("tiny").eval()


@pytest.fixture(scope="module")
def probed(tiny):
    return engine_parameter_names(tiny)


def forbid_forward(model):
    """A hook on the real model: any forward through it (the probe) fails the test."""
    def hook(module, args):
        raise AssertionError("the probe ran a forward although its answer was cached")
    return model.register_forward_pre_hook(hook)


def test_second_call_reads_the_answer_without_a_forward(tiny, probed, tmp_path):
    cache = ArtifactCache(tmp_path / "engine_params")
    assert cached_engine_parameter_names(tiny, cache) == probed
    assert cache.find(engine_params_key(tiny), PARAMS_FILE) is not None
    handle = forbid_forward(tiny)
    try:
        assert cached_engine_parameter_names(tiny, cache) == probed
    finally:
        handle.remove()


def test_an_unusable_answer_is_probed_again_and_replaced(tiny, probed, tmp_path):
    cache = ArtifactCache(tmp_path / "engine_params")
    expected = probed
    path = cache.store(engine_params_key(tiny), PARAMS_FILE, lambda partial: partial.write_text("[]"))
    for content in ("not json", '["no.such.parameter"]', "[]"):
        path.write_text(content)
        assert cached_engine_parameter_names(tiny, cache) == expected
        handle = forbid_forward(tiny)   # the probed answer replaced the unusable one
        try:
            assert cached_engine_parameter_names(tiny, cache) == expected
        finally:
            handle.remove()


def test_another_architecture_has_its_own_key(tiny):
    config = get_config("tiny")
    other = dataclasses.replace(config, text=dataclasses.replace(config.text, layers=config.text.layers + 1))
    torch.manual_seed(0)
    assert engine_params_key(build_catseg(other)) != engine_params_key(tiny)


def test_a_cache_that_cannot_be_written_still_answers(tiny, probed, tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    cache = ArtifactCache(blocked / "engine_params")
    assert cached_engine_parameter_names(tiny, cache) == probed
    assert any("could not remember the engine's parameters" in r.getMessage() for r in caplog.records)
