"""`semla-eval demo --compare-training`: standard LoRA vs RecycleLoRA vs the FISA profile on the demo world.

For each training method and seed, one library (an adapter per domain, on the frames and with the
budget `semla-eval demo` trains its std/rrqr libraries with; the seed sets the LoRA init and the batch
order); every library through the SemLA protocol, leave-one-out (oracle, SemLA, SemLA debounced; zero-
shot once). Reported: h-means over the target domains, their mean over seeds with a 95 % t-interval,
the per-seed paired difference to standard LoRA, trainable parameters and training time. Written as a
marked section of `<out>/evaluation.md` (which `semla-eval demo` keeps when it rewrites its own part)
and `<out>/evaluation_training.json`; `--render-only` redraws the section from the work folder's json.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from pathlib import Path

import numpy as np

from ..evaluation.metrics import harmonic_mean
from ..evaluation.report import miou_table, replace_section
from . import world
from .eval_setup import prepare_demo, train_library

SECTION = "training-comparison"   # the marked section of docs/evaluation.md this command maintains
METHODS = {"standard": {"init": "standard"}, "recyclelora": {"init": "recyclelora"}, "fisa": {"profile": "fisa"}}
ROWS = ("oracle", "semla", "semla-debounced")
ROW_NAMES = {"oracle": "oracle", "semla": "SemLA", "semla-debounced": "SemLA debounced"}
RENDER_FILE = "training_comparison.json"
DEFAULT_SEEDS = (250, 251, 252)


def interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95 % Student-t interval); half-width nan with fewer than 2 values."""
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    if v.size < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def summarise(render: dict) -> dict:
    """h-means per method / row / seed, their intervals, and the paired differences to standard."""
    exclude, seeds = render["exclude"], render["seeds"]
    miou = render["miou"]        # "<method> s<seed>" -> row -> domain -> mIoU
    out = {"hmean": {}, "interval": {}, "delta": {}, "domain_mean": {}}
    for method in render["methods"]:
        for row in ROWS:
            per_seed = [harmonic_mean(miou[f"{method} s{s}"][row], exclude) for s in seeds
                        if row in miou.get(f"{method} s{s}", {})]
            out["hmean"].setdefault(method, {})[row] = per_seed
            out["interval"].setdefault(method, {})[row] = interval(per_seed)
            domains = render["domains"]
            out["domain_mean"][f"{row} [{method}]"] = {
                d: float(np.mean([miou[f"{method} s{s}"][row][d] for s in seeds])) for d in domains}
    base = out["hmean"].get("standard", {})
    for method in render["methods"]:
        if method == "standard" or not base:
            continue
        for row in ROWS:
            diffs = [a - b for a, b in zip(out["hmean"][method][row], base[row], strict=True)]
            out["delta"].setdefault(method, {})[row] = interval(diffs) + (diffs,)
    return out


def exclude_domains(render: dict) -> list[str]:
    """The domains left out of the h-mean (the base model's source domains) that were evaluated."""
    return [d for d in render["exclude"] if d in render["domains"]]


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _pm(mean: float, half: float) -> str:
    return _pct(mean) + ("" if math.isnan(half) else f" ± {100 * half:.1f}")


def _delta(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{100 * mean:+.1f}"
    return f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]"


def _verdict(mean: float, half: float) -> str:
    if math.isnan(half):
        return "one seed: not resolved"
    if mean - half > 0:
        return "higher than standard"
    if mean + half < 0:
        return "lower than standard"
    return "not resolved from standard (the interval contains 0)"


def reading(render: dict, s: dict) -> list[str]:
    """Statements computed from this run's numbers, including where a method does not beat standard."""
    out = []
    train = render["training"]
    std = train.get("standard", {})
    for method in [m for m in render["methods"] if m != "standard"]:
        for row in ROWS:
            mean, half, _ = s["delta"][method][row]
            out.append(f"{method} vs standard, {ROW_NAMES[row]}: Δ h-mean {_delta(mean, half)} points — "
                       f"{_verdict(mean, half)}.")
        not_better = [ROW_NAMES[r] for r in ROWS if not (s["delta"][method][r][0] - s["delta"][method][r][1] > 0)]
        if not_better:
            out.append(f"**{method} does not beat standard LoRA** on: {', '.join(not_better)} "
                       "(mean difference ≤ 0 or an interval that contains 0).")
        t = train.get(method, {})
        if std and t:
            ratio = t["trainable_parameters"] / std["trainable_parameters"]
            speed = t["train_seconds_mean"] / std["train_seconds_mean"] if std["train_seconds_mean"] else math.nan
            out.append(f"{method}: {t['trainable_parameters']:,} trainable parameters ({ratio:.2f}x standard's "
                       f"{std['trainable_parameters']:,}); training loop {t['train_seconds_mean']:.1f} s per adapter "
                       f"({speed:.2f}x standard, same run, same shared machine); entries of rank {t['entry_rank']}.")
    if "recyclelora" in train and train["recyclelora"].get("entry_rank", 0) > train.get("standard", {}).get(
            "entry_rank", 0):
        out.append("RecycleLoRA trains the same number of parameters as standard LoRA (main r 6 + sub r 2) but "
                   "stores twice that rank: its adapters start from, and are saved relative to, components of the "
                   "frozen weights (dW = B A − B0 A0). Fusion folds the entry into the weights, so inference "
                   "costs the same; fusing it costs one wider matrix product per module.")
    if "recyclelora" in s["delta"] and s["delta"]["recyclelora"]["oracle"][0] < 0:
        out.append("RecycleLoRA's premise is about a pre-trained vision foundation model, whose minor RRQR "
                   "directions carry little of what pre-training learned, so an adapter started there can learn "
                   "new features without disturbing it. The demo's base model was trained from scratch for a few "
                   "hundred steps on clear images; whether its minor directions mean the same cannot be tested on "
                   "this world, and here starting from them does not help (Δ above).")
    for d in exclude_domains(render):
        semla = {m: s["domain_mean"][f"semla [{m}]"][d] for m in render["methods"]}
        listed = ", ".join(f"{m} {_pct(v)}" for m, v in semla.items())
        line = (f"On the source domain {d} (left out of the h-mean), SemLA with borrowed adapters scores {listed}; "
                f"zero-shot {_pct(render['zero_shot'][d])}.")
        if "fisa" in semla and semla["fisa"] > max(v for m, v in semla.items() if m != "fisa"):
            line += (" FISA's adapters change only the image side; borrowed, they hurt the domain the base model "
                     "already handles less than the others do.")
        out.append(line)
    if "fisa" in s["delta"]:
        mean, half, _ = s["delta"]["fisa"]["oracle"]
        if mean + half < 0:
            out.append("The FISA profile leaves the aggregator (CAT-Seg's mask generator) and the text tower "
                       "frozen and adapts only the CLIP image side. Here it trails standard LoRA even as an "
                       "oracle: the demo's base model was trained from scratch on clear images, so there is no "
                       "pre-trained CLIP knowledge for FISA to protect, and the frozen aggregator is capacity the "
                       "standard adapter uses. FISA's premise (mask classification is the bottleneck of a large "
                       "pre-trained VLM) cannot be tested on this world.")
    n = len(render["seeds"])
    out.append(f"Intervals come from {n} seeds on one world of {render['images_per_domain']} held-out images per "
               f"domain: they measure the spread of training, not of the data, and are wide at n = {n}.")
    return out


def markdown(render: dict, out: Path) -> str:
    s = summarise(render)
    b, train = render["budget"], render["training"]
    seeds = render["seeds"]
    cmd = render.get("command") or "semla-eval demo --compare-training --out docs"
    exclude = render["exclude"]
    zs_h = harmonic_mean(render["zero_shot"], exclude)
    lines = [
        f"## Adapter training: standard LoRA, RecycleLoRA, FISA profile ({len(seeds)} seeds)", "",
        f"Reproduce: `{cmd}` (this run: {render['seconds'] / 60:.0f} min wall, "
        f"{render.get('cpu_seconds', math.nan) / 60:.0f} min of CPU, on 2 CPU cores shared with other jobs, "
        "including building what was not cached: demo assets and libraries are reused from the cache and the "
        "work folder when present). Numbers: `evaluation_training.json`.", "",
        f"- Every method trains one library per seed (seeds {', '.join(map(str, seeds))}; the seed sets the LoRA "
        f"init and the batch order): one adapter per demo domain on the same frames with the same budget "
        f"({b['steps']} steps, batch {b['batch_size']}, LR {b['lr']:g}, {b['loss']} loss, warm-up + cosine, "
        "clip 0.01).",
        "- **standard**: PEFT LoRA r 8, α 16 on SemLA's targets. **recyclelora**: RecycleLoRA's main adapter "
        "(r 6, on each frozen weight's minor RRQR components) + sub adapter (r 2, major components, 0.5x "
        "scaling, 0.1x LR), both moved out of the frozen weight while training and saved as one plain LoRA "
        "(`semla_ros/training/recyclelora.py`). **fisa**: the FISA profile, LoRA r 8 on the CLIP image tower's "
        "q/v projections and, with class-text semantic guidance, on the early blocks' MLP output; aggregator, "
        "decoder and text tower frozen (`semla_ros/training/fisa.py`).",
        f"- Protocol as in the section above: leave-one-out, oracle = the target domain's own adapter. h-mean "
        f"in % over the target domains ({', '.join(exclude)} left out). ± is the half-width of a 95 % "
        f"t-interval over the {len(seeds)} seeds; Δ is the paired difference to standard LoRA trained with the "
        f"same seed, [95 % interval]. Zero-shot (no adapter): h-mean {_pct(zs_h)}.", "",
        "| library | trainable parameters | entry rank | train s / adapter | oracle | SemLA | SemLA debounced |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method in render["methods"]:
        t = train[method]
        cells = [_pm(*s["interval"][method][row]) for row in ROWS]
        lines.append(f"| {method} | {t['trainable_parameters']:,} | {t['entry_rank']} | "
                     f"{t['train_seconds_mean']:.1f} (+{t['init_seconds_mean']:.1f} init) | "
                     + " | ".join(cells) + " |")
    lines += ["", "Paired difference to standard LoRA (h-mean points, same seed):", "",
              "| library | oracle | SemLA | SemLA debounced |", "|---|---:|---:|---:|"]
    for method in [m for m in render["methods"] if m != "standard"]:
        lines.append(f"| {method} | " + " | ".join(_delta(*s["delta"][method][row][:2]) for row in ROWS) + " |")
    rows = {"zero-shot": render["zero_shot"], **s["domain_mean"]}
    lines += ["", "Per domain, mean over seeds (mIoU %; the h-mean column is the h-mean of these means):", "",
              miou_table(rows, render["domains"], exclude).rstrip(), "", "How to read it (computed from this run):",
              ""]
    lines += [f"- {t}" for t in reading(render, s)]
    return "\n".join(lines) + "\n"


def write_section(render: dict, out: Path) -> None:
    out = Path(out)
    replace_section(out / "evaluation.md", SECTION, markdown(render, out))
    s = summarise(render)
    (out / "evaluation_training.json").write_text(json.dumps(
        {k: render[k] for k in ("methods", "seeds", "budget", "domains", "exclude", "training", "settings",
                                "images_per_domain", "zero_shot", "miou")}
        | {"hmean": s["hmean"], "interval": s["interval"], "delta": s["delta"]}, indent=1, default=float))


def _training_facts(metas: list[dict], entry: Path) -> dict:
    """Trainable parameters, training seconds (loop, and init before it) over all of a method's adapters,
    and the rank `entry` (one of them) is stored with."""
    from ..core.library import load_entry

    train_s = [m["train_seconds"] for m in metas]
    return {"trainable_parameters": int(metas[0]["trainable_parameters"]), "train_seconds": train_s,
            "train_seconds_mean": float(np.mean(train_s)),
            "init_seconds_mean": float(np.mean([m["init_seconds"] for m in metas])),
            "trained_now": sum(bool(m["trained_now"]) for m in metas), "entry_rank": load_entry(entry).rank}


def run_training_comparison(args, settings) -> int:
    """The command: trains what the work folder lacks, evaluates, writes the section (see module doc)."""
    import torch

    out = Path(args.out)
    if args.render_only is not None:
        write_section(json.loads(Path(args.render_only).read_text()), out)
        print(f"wrote the training comparison into {out / 'evaluation.md'}")
        return 0
    if args.no_train:
        raise ValueError("--compare-training trains its libraries; it cannot run with --no-train")
    seeds = list(dict.fromkeys(args.seeds))
    # One torch thread, as the demo build: on a shared 2-core machine a second OpenMP thread spin-waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _compare(args, settings, seeds, out)
    finally:
        torch.set_num_threads(threads)


def _compare(args, settings, seeds: list[int], out: Path) -> int:
    from ..catseg.predictor import CatSegPredictor
    from ..evaluation.dataset import open_dataset
    from ..evaluation.report import evaluate_libraries
    from ..training.loop import LoopSettings
    from ..training.lora import TrainSettings

    t0, cpu0 = time.monotonic(), time.process_time()
    setup = prepare_demo(args, print)
    libraries, training = {}, {}
    for method, kind in METHODS.items():
        metas = []
        for seed in seeds:
            label, lib = f"{method} s{seed}", setup.work / f"cmp_{method}_s{seed}"
            ts = TrainSettings(**kind, loop=LoopSettings(**{**setup.budget, "seed": seed}))
            print(f"training library {label}")
            done = train_library(setup.model, setup.navigator.inner, setup.train_root, lib, ts, print)
            metas += list(done.values())
            libraries[label] = lib
        entry = libraries[f"{method} s{seeds[0]}"] / metas[0]["name"]
        training[method] = _training_facts(metas, entry) | {"settings": dataclasses.asdict(TrainSettings(**kind))}
    protocol = dataclasses.replace(settings, methods=("zero-shot",) + ROWS)
    test = open_dataset(setup.test_root, list(setup.domains))
    predictor = CatSegPredictor(setup.model, list(world.CLASS_NAMES))
    results = evaluate_libraries(predictor, setup.navigator, test, libraries, protocol, quiet=args.quiet)
    exclude = list(args.exclude_from_hmean) if args.exclude_from_hmean else list(setup.params.source_domains)
    render = {"methods": list(METHODS), "seeds": seeds, "budget": setup.budget, "domains": list(setup.domains),
              "exclude": exclude, "training": training, "settings": protocol.to_json(),
              "images_per_domain": args.images_per_domain,
              "zero_shot": results["zero-shot"].miou_table()["zero-shot"],
              "miou": {label: results[label].miou_table() for label in libraries},
              "seconds": time.monotonic() - t0, "cpu_seconds": time.process_time() - cpu0,
              "command": "semla-eval " + " ".join(shlex.quote(a) for a in getattr(args, "argv", None) or
                                                  ["demo", "--compare-training", "--out", str(out)])}
    (setup.work / RENDER_FILE).write_text(json.dumps(render, indent=1, default=float))
    write_section(render, out)
    print(markdown(render, out))
    print(f"wrote {out / 'evaluation.md'} (training comparison section) and {out / 'evaluation_training.json'} "
          f"({time.monotonic() - t0:.0f} s)")
    return 0
