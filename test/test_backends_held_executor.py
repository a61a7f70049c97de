"""HeldExecutor: jobs wait for the release, then each runs on a thread of its own; a job cancelled while held
never runs; later jobs start at once; shutdown cancels what is still held. And through build_engine: the engine
and navigator builds wait for the release while PyTorch serves, then the engine serves."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from semla_ros.backends.held_executor import HeldExecutor


def recorder():
    ran: list[tuple[str, str]] = []

    def job(name):
        ran.append((name, threading.current_thread().name))
        return name
    return ran, job


def test_jobs_wait_for_the_release_then_run():
    ran, job = recorder()
    executor = HeldExecutor("test-build")
    first, second = executor.submit(job, "a"), executor.submit(job, "b")
    assert executor.held == 2 and not first.done() and not second.done() and ran == []
    executor.release()
    assert first.result(30) == "a" and second.result(30) == "b"
    assert sorted(ran) == [("a", "test-build"), ("b", "test-build")] and executor.held == 0
    assert executor.submit(job, "c").result(30) == "c"   # once released: at once
    executor.shutdown()


def test_a_job_cancelled_while_held_never_runs():
    ran, job = recorder()
    executor = HeldExecutor()
    cancelled, kept = executor.submit(job, "cancelled"), executor.submit(job, "kept")
    assert cancelled.cancel()
    executor.release()
    assert kept.result(30) == "kept"
    executor.shutdown()
    assert cancelled.cancelled() and [name for name, _ in ran] == ["kept"]


def test_shutdown_cancels_what_is_held_and_refuses_more():
    ran, job = recorder()
    executor = HeldExecutor()
    held = executor.submit(job, "held")
    executor.shutdown()
    executor.release()   # after shutdown: nothing starts
    assert held.cancelled() and ran == []
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(job, "late")


def test_failures_reach_the_future():
    executor = HeldExecutor()
    future = executor.submit(lambda: 1 / 0)
    executor.release()
    assert isinstance(future.exception(30), ZeroDivisionError)
    executor.shutdown()


def test_held_engine_builds_start_at_the_release(tmp_path):
    pytest.importorskip("onnxruntime")
    from semla_ros.demo.build_assets import demo_config
    from semla_ros.engine import EngineSpec, build_engine

    config = tmp_path / "small.json"   # the demo's small CAT-Seg: an export of seconds
    config.write_text(json.dumps(demo_config().to_dict()))
    spec = EngineSpec(model_config=str(config), allow_random_weights=True, navigator="tower", device="cpu",
                      backend="onnxruntime", classes=("road", "sky"), engine_cache_dir=str(tmp_path / "cache"))
    held = HeldExecutor()
    build = build_engine(spec, onnxruntime_builds=held)
    assert build.segmenter is not None and not build.errors
    assert held.held == 2   # the segmentation engine's build and the navigator's, neither started
    frame = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    build.segmenter.process(frame)
    assert build.backend.serving == "pytorch" and build.navigator.serving == "pytorch"
    assert not (tmp_path / "cache" / "onnx").exists()   # nothing exported while held
    held.release()
    build.backend.wait_ready(120)
    build.navigator.wait_ready(120)
    build.segmenter.process(frame)
    assert build.backend.serving == "engine" and build.navigator.serving == "engine"
    build.segmenter.close()
    build.backend.close()
    build.navigator.close()
    held.shutdown()


def test_nothing_is_held_without_onnxruntime():
    from semla_ros.engine import EngineSpec, build_engine

    held = HeldExecutor()
    build = build_engine(EngineSpec(model_config="tiny", allow_random_weights=True, navigator="tower", device="cpu",
                                    backend="torch", classes=("road", "sky")), onnxruntime_builds=held)
    assert build.segmenter is not None and build.info["backend"] == "TorchBackend" and held.held == 0
    build.segmenter.close()
