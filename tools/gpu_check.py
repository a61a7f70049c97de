#!/usr/bin/env python3
"""Everything GPU-side in one call: install what is missing, run the GPU tests and `semla-bench tensorrt`,
write one JSON report. Run through tools/gpu_check.sh (see its header for the wheel folder).

Standard library only: it runs before anything is installed. Each step runs in a child process with a
time limit (the whole check is sized for <= 8 minutes on an H200), and its outcome goes into the report
whatever happens; the exit code is 0 only when the GPU tests ran and passed and the benchmark's parity
checks passed. `--dry-run` installs nothing and needs no GPU: it runs the same steps (the GPU tests then
skip, the benchmark says why it cannot run) so the script's own logic is checked on any machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_TESTS = ("test/test_backends_tensorrt.py",)
# module -> what provides it (a wheel in --wheels, or the package index); {cuda} is the CUDA major of torch.
NEEDED = {"tensorrt": "tensorrt-cu{cuda}", "onnx": "onnx", "open_clip": "open_clip_torch", "ftfy": "ftfy",
          "pytest": "pytest", "numpy": "numpy", "torch": "torch"}
STEP_LIMITS_S = {"install": 150, "tests": 150, "bench": 330}


def run(command: list[str], limit_s: float, env: dict | None = None) -> dict:
    """Run a child; its exit code, seconds and the tail of its output (never raises)."""
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=limit_s)
        code, output = done.returncode, done.stdout
    except subprocess.TimeoutExpired as exc:
        code, output = "timeout", (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
    except OSError as exc:
        code, output = "not started", str(exc)
    return {"command": " ".join(command), "exit_code": code, "seconds": round(time.monotonic() - start, 1),
            "output_tail": output[-4000:]}


def probe(python: str, env: dict) -> dict:
    """What the interpreter sees: versions, the GPU, which needed modules import."""
    code = ("import importlib, json, sys\n"
            f"mods = {sorted(NEEDED)!r}\n"
            "found = {}\n"
            "for m in mods:\n"
            "    try:\n"
            "        mod = importlib.import_module(m); found[m] = getattr(mod, '__version__', 'yes')\n"
            "    except Exception as e:\n"
            "        found[m] = None\n"
            "info = {'python': sys.version.split()[0], 'modules': found}\n"
            "try:\n"
            "    import torch\n"
            "    info['torch_cuda'] = torch.version.cuda\n"
            "    info['cuda_available'] = torch.cuda.is_available()\n"
            "    info['gpu'] = torch.cuda.get_device_name() if torch.cuda.is_available() else None\n"
            "except Exception:\n"
            "    pass\n"
            "print(json.dumps(info))\n")
    result = run([python, "-c", code], 120, env)
    try:
        return json.loads(result["output_tail"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": result["output_tail"][-500:]}


def nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    result = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30)
    return result["output_tail"].strip() if result["exit_code"] == 0 else None


def install(python: str, wheels: Path | None, site: Path, missing: list[str], cuda_major: str | None,
            dry_run: bool) -> dict:
    """Install what is missing into `site` (prepended to PYTHONPATH): every file of the wheel folder
    (no index, no dependency resolution: the folder holds exactly what the box lacks), else from the
    package index by name (needs a network)."""
    step: dict = {"missing_before": missing, "site": str(site)}
    if not missing:
        step["action"] = "nothing to install"
        return step
    if wheels is not None:
        files = sorted(str(f) for f in wheels.iterdir() if f.suffix == ".whl" or f.name.endswith(".tar.gz"))
        step["files"] = [Path(f).name for f in files]
        if not files:
            step["action"] = f"no wheels in {wheels}"
            return step
        command = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation",
                   "--no-cache-dir", "--upgrade", "--target", str(site), *files]
    else:
        names = [NEEDED[m].format(cuda=cuda_major or "13") for m in missing]
        step["names"] = names
        command = [python, "-m", "pip", "install", "-q", "--no-cache-dir", "--target", str(site), *names]
    if dry_run:
        step["action"] = "dry run: would run " + " ".join(command)
        return step
    step.update(run(command, STEP_LIMITS_S["install"]))
    return step


def junit_summary(path: Path) -> dict:
    """Counts and per-test outcome (with skip reasons) from pytest's junit XML."""
    if not path.is_file():
        return {"error": f"{path.name} was not written"}
    root = ElementTree.parse(path).getroot()
    cases = []
    for case in root.iter("testcase"):
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                detail = (child.get("message") or "")[:300]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "detail": detail})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="semla_ros GPU check: install, GPU tests, semla-bench tensorrt")
    parser.add_argument("--wheels", type=Path, default=None, help="folder of pre-downloaded wheels (offline install)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    parser.add_argument("--work", type=Path, default=None, help="install target and scratch (default: next to --out)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that holds torch")
    parser.add_argument("--tests", nargs="+", default=list(GPU_TESTS), help="test files to run")
    parser.add_argument("--bench-args", default="--repeats 20", help="extra arguments for semla-bench tensorrt")
    parser.add_argument("--dry-run", action="store_true", help="install nothing; run the steps anyway (no GPU needed)")
    args = parser.parse_args(argv)

    started = time.time()
    out = args.out.resolve()
    work = (args.work or out.parent / "gpu_check_work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    site = work / "site"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("SEMLA_CACHE_DIR", str(work / "cache"))
    report: dict = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                    "host": {"machine": platform.machine(), "nvidia_smi": nvidia_smi()}, "steps": {}}

    before = probe(args.python, env)
    report["host"]["before_install"] = before
    missing = [m for m, v in (before.get("modules") or {}).items() if v is None]
    cuda = (before.get("torch_cuda") or "").split(".")[0] or None
    report["steps"]["install"] = install(args.python, args.wheels, site, missing, cuda, args.dry_run)
    after = probe(args.python, env)
    report["host"]["after_install"] = after

    junit = work / "gpu_tests.xml"
    junit.unlink(missing_ok=True)
    tests = run([args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rs",
                 f"--junitxml={junit}", *args.tests], STEP_LIMITS_S["tests"], env)
    tests.update(junit_summary(junit))
    report["steps"]["tests"] = tests

    bench_json = work / "bench_tensorrt.json"
    bench_json.unlink(missing_ok=True)
    bench = run([args.python, "-m", "semla_ros.cli.bench", "tensorrt", "--json", str(bench_json),
                 "--cache-dir", str(work / "bench_cache"), *args.bench_args.split()], STEP_LIMITS_S["bench"], env)
    try:
        bench["figures"] = json.loads(bench_json.read_text())
    except (OSError, ValueError):
        bench["figures"] = None
    report["steps"]["bench"] = bench

    counts = tests.get("counts", {})
    gpu_ran = counts.get("skipped", 1) == 0 and counts.get("passed", 0) > 0
    report["ok"] = bool(gpu_ran and tests["exit_code"] == 0 and bench["exit_code"] == 0)
    report["verdict"] = ("GPU tests and benchmark passed" if report["ok"] else
                         "GPU tests did not run (skipped: see steps.tests.cases)" if not gpu_ran else
                         "a GPU test or the benchmark failed (see steps)")
    report["seconds"] = round(time.time() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"gpu_check: {report['verdict']} in {report['seconds']:.0f} s; report: {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
