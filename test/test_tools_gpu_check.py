"""tools/gpu_check.py's own logic, on a machine without a GPU (--dry-run): it plans the offline install from
the wheel folder, runs the selected tests and the TensorRT benchmark, reads their outcomes, and writes one
JSON report whose verdict says that the GPU tests did not run (tensorrt/cuda missing here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU_TEST = "test/test_backends_tensorrt.py::test_tensorrt_vocabulary_growth_builds_a_bigger_profile"


@pytest.mark.slow
def test_dry_run_writes_a_report_that_says_the_gpu_tests_did_not_run(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "tensorrt_cu13_bindings-11.4.0.106-cp312-none-manylinux_2_28_x86_64.whl").write_bytes(b"")
    out = tmp_path / "report" / "gpu_check.json"
    done = subprocess.run([sys.executable, "tools/gpu_check.py", "--dry-run", "--wheels", str(wheels),
                           "--out", str(out), "--tests", GPU_TEST],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["ok"] is False and "did not run" in report["verdict"]
    install = report["steps"]["install"]
    if "tensorrt" in install["missing_before"]:     # the usual case off a GPU machine
        assert "--no-index" in install["action"] and "tensorrt_cu13_bindings" in install["action"]
        assert install["files"] == [p.name for p in wheels.iterdir()]
    tests = report["steps"]["tests"]
    assert tests["counts"] == {"passed": 0, "failed": 0, "error": 0, "skipped": 1}
    assert any(word in tests["cases"][0]["detail"].lower() for word in ("tensorrt", "cuda", "gpu"))
    bench = report["steps"]["bench"]
    assert bench["exit_code"] == 1 and bench["figures"]["ran"] is False and bench["figures"]["reason"]
    assert report["seconds"] < 480 and str(out) in done.stdout
