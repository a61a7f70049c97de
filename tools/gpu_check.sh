#!/usr/bin/env bash
# One call that verifies everything GPU-side of semla_ros on a GPU machine, in <= 8 minutes:
#   1. installs what the machine lacks (TensorRT, open_clip, ...) into <work>/site, offline from a wheel folder;
#   2. runs the GPU tests (test/test_backends_tensorrt.py: engine build, fp32 parity with TF32 off, the engine
#      cache, a refit of exactly the 52 image-path fusion targets of the tiny model, a bigger class profile);
#   3. runs `semla-bench tensorrt` (ViT-B/16-384: fp32 and fp16 engines, parity, refit after a K=5 fusion,
#      frame time vs PyTorch eager and fp16 autocast);
#   4. writes one JSON report (default ./gpu_check.json); exit code 0 only if the GPU tests ran and passed
#      and the benchmark's parity checks passed.
#
# Usage:   tools/gpu_check.sh [--wheels DIR] [--out FILE] [--python PY] [--dry-run]
#          --dry-run installs nothing and needs no GPU: the same steps run (GPU tests skip, the benchmark says why
#          it cannot run), which checks the script itself on any machine.
#
# The wheel folder (the GPU machine has no network): on a machine with one, for the GPU machine's Python
# (3.12 here) and CUDA major (13 for torch 2.11+cu130), download exactly what the GPU machine lacks:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       --extra-index-url https://pypi.nvidia.com -d wheels \
#       tensorrt-cu13-libs==11.4.0.106 tensorrt-cu13-bindings==11.4.0.106 open_clip_torch==3.3.0 ftfy wcwidth
#   pip download --no-deps --no-binary=:all: -d wheels tensorrt-cu13==11.4.0.106   # the `tensorrt` module (sdist)
# (pypi.org only has stubs of tensorrt-cu13-libs/-bindings that fetch the real wheels from pypi.nvidia.com at
# install time, which an offline machine cannot; the two real wheels are about 1.5 GB together.) Add any other
# module the report's host.before_install lists as missing (onnx, pytest, ...). Everything in the folder is
# installed with --no-deps, so it must hold exactly what is missing, one version of each.
# The orchestrator needs only the standard library; --python (default: the one running it) is the interpreter
# that holds torch and runs the tests and the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" tools/gpu_check.py "$@"
