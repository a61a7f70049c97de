"""The semla_segmenter parameters that run the demo world's assets, written as a ROS 2 params file.

Why one place: `semla-demo` (which starts the node itself) and launch/demo.launch.py (a ROS user's
one command) must run the node on the demo the same way.

    python -m semla_ros.demo.node_parameters OUT.yaml [--cache-dir DIR] [--device cpu]

builds the assets on first use (a few minutes on 2 CPU cores, then cached) and writes OUT.yaml for
`--params-file`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from . import world
from .build_assets import Assets, BuildParams, ensure_assets
from .settings import DEMO_NODE_SETTINGS

DEMO_BACKEND = "torch"


def node_parameters(assets: Assets, device: str = "cpu", settings: dict = DEMO_NODE_SETTINGS) -> dict:
    """The node's parameters for the demo model, its adapter library and its own image tower as navigator.

    PyTorch, not `auto`: the 1.8 M-parameter demo model runs far above the camera's 10 Hz on PyTorch, so an
    ONNX Runtime export would only spend CPU during the recording, and the README's demo figures are PyTorch's
    (`semla-demo --backend onnxruntime` runs it on the engine)."""
    return {"model_config": str(assets.config_path), "checkpoint": str(assets.checkpoint),
            "library_path": str(assets.library), "navigator": "tower", "classes": list(world.CLASS_NAMES),
            "device": device, "backend": DEMO_BACKEND, **settings}


def write_params_file(path: Path, parameters: dict) -> Path:
    """A params file in the layout `--params-file` and launch_ros read: every node, ros__parameters."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semla_ros.demo.node_parameters",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="params file to write")
    parser.add_argument("--cache-dir", type=Path, default=None, help="asset cache root (default: SEMLA_DEMO_CACHE "
                                                                     "or ~/.cache/semla_ros/demo)")
    parser.add_argument("--device", default="cpu", help="device parameter of the node (default %(default)s)")
    args = parser.parse_args(argv)
    print("demo assets: small CAT-Seg + one LoRA per domain (built on first use, then cached)", flush=True)
    assets, built = ensure_assets(args.cache_dir, BuildParams())
    path = write_params_file(args.out, node_parameters(assets, device=args.device))
    print(f"{'built' if built else 'cached'}: {assets.root}; node parameters in {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
