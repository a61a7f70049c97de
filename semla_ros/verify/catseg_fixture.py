"""Checking this implementation against a reference fixture produced by the official code.

A fixture directory holds config.json, model.safetensors, input.png and expected.npz (see
shared/fixtures/*/README.md). `check_catseg_fixture` rebuilds the model from those files alone and compares every
tensor of expected.npz it knows how to produce; `CheckRow` is the shared result row (the engine's fusion check
returns the same rows).
"""
from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np
import torch

# Absolute tolerances, from the fixture README's suggestions for an independent float32 implementation.
TOLERANCES = {
    "tokens": 0.0,
    "text_embeddings": 1e-5,
    "dense_features": 1e-4,
    "guidance_tap0": 1e-4,
    "guidance_tap1": 1e-4,
    "cost_volume": 1e-5,
    "logits": 1e-4,
    "sem_seg": 1e-5,
    "logits_pool2x2": 1e-4,
    "sliding_logits": 1e-4,
    "sliding_sem_seg": 1e-5,
}
FIXTURE_FILES = ("config.json", "model.safetensors", "input.png", "expected.npz")


@dataclass(frozen=True)
class CheckRow:
    name: str
    shape: tuple
    max_abs_diff: float
    tolerance: float
    ok: bool
    detail: str = ""


def compare(name: str, actual, expected, tolerance: float) -> CheckRow:
    """One row: max |actual - expected| against an absolute tolerance (shape mismatch fails)."""
    actual = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return CheckRow(name, tuple(expected.shape), float("inf"), tolerance, False,
                        f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if expected.size == 0:
        return CheckRow(name, tuple(expected.shape), 0.0, tolerance, True)
    if expected.dtype.kind in "iub":
        diff = float(np.abs(actual.astype(np.int64) - expected.astype(np.int64)).max())
    else:
        diff = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    return CheckRow(name, tuple(expected.shape), diff, tolerance, bool(diff <= tolerance))


def format_rows(rows: list[CheckRow]) -> str:
    lines = [f"{'name':28s} {'shape':20s} {'max_abs_diff':>13s} {'tolerance':>10s}  ok"]
    for row in rows:
        line = (f"{row.name:28s} {str(tuple(row.shape)):20s} {row.max_abs_diff:13.3e} {row.tolerance:10.1e}  "
                f"{'ok' if row.ok else 'FAIL'}")
        lines.append(line + (f"  ({row.detail})" if row.detail else ""))
    return "\n".join(lines)


def print_rows(rows: list[CheckRow], file: TextIO | None = None) -> None:
    print(format_rows(rows), file=file or sys.stdout)


@dataclass
class FixtureRun:
    rows: list[CheckRow]
    skipped: list[str]  # expected.npz keys this implementation does not produce
    model: torch.nn.Module
    predictor: object  # CatSegPredictor, whole-image path, official_postprocess=True (comparable to the fixture)


def missing_fixture_files(fixture_dir: Path) -> list[str]:
    return [name for name in FIXTURE_FILES if not (Path(fixture_dir) / name).is_file()]


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)


@contextlib.contextmanager
def class_pooling(model, size: tuple[int, int]) -> Iterator[None]:
    """Temporarily run class aggregation with another pooling size (it has no weights)."""
    layers = [layer.attention for layer in model.aggregator.layers]
    previous = [layer.pooling_size for layer in layers]
    try:
        for layer in layers:
            layer.pooling_size = tuple(size)
        yield
    finally:
        for layer, old in zip(layers, previous, strict=True):
            layer.pooling_size = old


def check_catseg_fixture(fixture_dir: str | Path) -> FixtureRun:
    """Build from DIR/config.json, load DIR/model.safetensors strictly, run DIR/input.png, compare."""
    from ..catseg.build import load_catseg
    from ..catseg.predictor import CatSegPredictor

    fixture_dir = Path(fixture_dir)
    missing = missing_fixture_files(fixture_dir)
    if missing:
        raise FileNotFoundError(f"{fixture_dir} is not a CAT-Seg fixture: missing {', '.join(missing)}")
    config_json = json.loads((fixture_dir / "config.json").read_text())
    model = load_catseg(fixture_dir / "config.json", fixture_dir / "model.safetensors")
    class_names = list(config_json["text"]["class_names"])
    predictor = CatSegPredictor(model, class_names, official_postprocess=True)
    image = read_rgb(fixture_dir / config_json.get("input", {}).get("file", "input.png"))
    expected = np.load(fixture_dir / "expected.npz")

    cache: dict[str, object] = {}

    def whole() -> dict[str, torch.Tensor]:
        if "whole" not in cache:
            with torch.no_grad():
                text = predictor.text_embeddings()
                x, padded = predictor.preprocess(image)
                features = model.image_features(x)
                logits = model.aggregate(features, text)
                cache["whole"] = {
                    "text": text, "features": features, "logits": logits,
                    "cost": model.cost_volume(features.dense, text),
                    "sem_seg": predictor.postprocess(logits, image.shape[:2], padded),
                }
        return cache["whole"]

    def sliding() -> dict[str, torch.Tensor]:
        if "sliding" not in cache:
            with torch.no_grad():
                logits = predictor.sliding_logits(image)
                cache["sliding"] = {"logits": logits,
                                    "sem_seg": predictor.sliding_postprocess(logits, image.shape[:2])}
        return cache["sliding"]

    def pooled() -> torch.Tensor:
        with torch.no_grad(), class_pooling(model, (2, 2)):
            x, _ = predictor.preprocess(image)
            return model(x, predictor.text_embeddings())

    producers: dict[str, Callable[[], object]] = {
        "tokens": lambda: predictor.tokens,
        "text_embeddings": lambda: whole()["text"],
        "dense_features": lambda: whole()["features"].dense,
        "guidance_tap0": lambda: whole()["features"].tap0,
        "guidance_tap1": lambda: whole()["features"].tap1,
        "cost_volume": lambda: whole()["cost"],
        "logits": lambda: whole()["logits"],
        "sem_seg": lambda: whole()["sem_seg"],
        "logits_pool2x2": pooled,
        "sliding_logits": lambda: sliding()["logits"],
        "sliding_sem_seg": lambda: sliding()["sem_seg"],
    }
    rows, skipped = [], []
    for name in expected.files:
        if name not in producers:
            skipped.append(name)
            continue
        rows.append(compare(name, producers[name](), expected[name], TOLERANCES[name]))
    return FixtureRun(rows=rows, skipped=skipped, model=model, predictor=predictor)
