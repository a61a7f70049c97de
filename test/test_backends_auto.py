"""`backend: auto`: the fastest backend that can run here, chosen by a pure rule tested for every combination
of what is available, and said once with its reason (build health, log line, diagnostics)."""
from __future__ import annotations

import itertools
import json

import pytest

from semla_ros.backends.factory import BACKENDS, BackendChoice, auto_backend, choose_backend, make_backend
from semla_ros.engine import EngineSpec, build_engine

MISSING_TRT = "the 'tensorrt' Python package is not installed"
MISSING_ORT = "the 'onnxruntime' and 'onnx' Python packages are needed"


def expected(device: str, precision: str, trt: bool, ort: bool) -> str:
    """The rule of issue 25, written out: TensorRT on a GPU, else ONNX Runtime (fp32) where it runs, else PyTorch."""
    if device == "cuda" and trt:
        return "tensorrt"
    if ort and precision == "fp32":
        return "onnxruntime"
    return "torch"


@pytest.mark.parametrize("device,precision,trt,ort", list(itertools.product(("cpu", "cuda"), ("fp32", "fp16"),
                                                                            (True, False), (True, False))))
def test_auto_rule_for_every_combination(device, precision, trt, ort):
    choice = choose_backend(device, precision, None if trt else MISSING_TRT, None if ort else MISSING_ORT)
    assert choice.kind == expected(device, precision, trt, ort)
    assert choice.kind in BACKENDS and str(choice).startswith(f"backend auto: {choice.kind} (")
    if choice.kind == "torch":   # every reason the faster ones were passed over is said, none silently
        assert ("ONNX Runtime" in choice.reason) and (MISSING_ORT in choice.reason if not ort else
                                                      "precision is fp16" in choice.reason)
        assert (MISSING_TRT in choice.reason) == (device == "cuda")
    if choice.kind == "onnxruntime":
        assert ("CUDA" if device == "cuda" else "CPU") in choice.reason
        assert (MISSING_TRT in choice.reason) == (device == "cuda")


def test_auto_here_is_onnxruntime_on_this_cpu():
    """This machine: no GPU, ONNX Runtime installed (a dependency of the CPU install)."""
    choice = auto_backend("cpu")
    assert choice == BackendChoice("onnxruntime", "ONNX Runtime is installed with its CPU execution provider")
    assert auto_backend("cpu", "fp16").kind == "torch"


def test_auto_is_the_default_and_explicit_values_keep_their_meaning():
    assert EngineSpec().backend == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend("onnx", predictor=None)


def test_build_engine_says_the_choice_once(tmp_path):
    from semla_ros.demo.build_assets import demo_config

    config = tmp_path / "small.json"   # the demo's small CAT-Seg: an export of seconds
    config.write_text(json.dumps(demo_config().to_dict()))
    build = build_engine(EngineSpec(model_config=str(config), allow_random_weights=True, navigator="tower",
                                    device="cpu", classes=("road", "sky"), engine_cache_dir=str(tmp_path / "c")))
    try:
        assert not build.errors and build.info["backend"] == "EngineBackend"
        notes = [(level, m) for source, level, m in build.notes if source == "backend"]
        assert notes == [("ok", "onnxruntime fp32 (backend auto: onnxruntime (ONNX Runtime is installed with its "
                                "CPU execution provider))")]
        assert build.info["backend_choice"].startswith("backend auto: onnxruntime")
        assert build.backend.wait_ready() is build.backend.engine
    finally:
        build.segmenter.close()
        build.backend.close()
