"""`semla-bench library`: adapter libraries at fleet scale - open time, memory, retrieval and swaps.

Synthetic libraries of ViT-B-sized entries on disk (the 154 SemLA targets of CAT-Seg vitb16_384,
r=8: 8.3 MB per adapter), each configuration measured in a fresh subprocess so its RSS is its own:
  open      AdapterLibrary.open against the model (config, centroid, safetensors header, shapes):
            time, and RSS growth per 100 adapters
  retrieve  top-K of a query through the library's index, next to the exact full pass it replaces
            (same rows and weights is checked on every query)
  decision  what the node does per embedding besides the network: debouncer + its trigger (the default), the
            embedding's retrieval, its support numbers and the coverage monitor (no adaptation)
  swap      select (retrieve + read the K adapters) + stage W_base + dW + copy into the model, cold
            (factors not cached, their file pages dropped from the OS cache) and warm (cached);
            text embeddings are left out (the same work in both)
  eager     the loading before this change: every adapter's factors read when the library opens
Disk: 10,000 distinct ViT-B adapters would take 83 GB, so `--pool` distinct adapter files are
written and entry i's adapter_model.safetensors is a hard link to pool file i mod pool; every
entry has its own config, centroid and metadata, and the loader reads each entry's own path.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..core.fields import add_options, positive_int
from ..core.output_paths import check_output_folder
from ..core.progress import progress_bar
from ..core.settings import SegmenterSettings

DIM = 768           # the official navigator's embedding (CLIP ViT-L/14)
DIR_MARKER = ".semla-bench-library"   # a --dir this benchmark made, and may rebuild


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _target_shapes(config: str) -> dict[str, tuple[int, int]]:
    from semla_ros.catseg.build import build_catseg
    from semla_ros.core.targets import semla_target_modules

    model = build_catseg(config, device="meta")
    return {name: tuple(model.get_submodule(name).weight.shape) for name in semla_target_modules(model)}


def _centroids(n: int, seed: int = 0) -> np.ndarray:
    """Domains around a few hundred places in embedding space, like a fleet's many similar scenes."""
    rng = np.random.default_rng(seed)
    places = rng.normal(size=(max(1, n // 20), DIM))
    return (places[rng.integers(len(places), size=n)] + 0.5 * rng.normal(size=(n, DIM))).astype(np.float32)


def build_store(root: Path, shapes, entries: int, pool: int, rank: int, quiet: bool = False) -> Path:
    """`root/store/` with `entries` entries over `pool` distinct adapter files (reused when it is there)."""
    import torch

    from semla_ros.core.library import WEIGHTS_FILE, write_entry

    store = root / "store"
    stamp = store / ".built"
    want = {"entries": entries, "pool": pool, "rank": rank, "modules": len(shapes)}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return store
    shutil.rmtree(store, ignore_errors=True)       # only inside a --dir this benchmark made (check_dir)
    shutil.rmtree(root / "pool", ignore_errors=True)
    g = torch.Generator().manual_seed(0)
    bar = progress_bar(total=pool + entries, desc="build library files", unit="file", quiet=quiet)
    for p in range(pool):
        factors = {m: (torch.randn(rank, i, generator=g) * 0.02, torch.randn(o, rank, generator=g) * 0.02)
                   for m, (o, i) in shapes.items()}
        path = write_entry(root / "pool", f"pool{p:04d}", factors, np.zeros(DIM), lora_alpha=2 * rank) / WEIGHTS_FILE
        with open(path, "rb") as f:
            os.fsync(f.fileno())      # written back, so dropping its cached pages really makes a read cold
        bar.update(1)
    small = {m: (torch.zeros(rank, 1), torch.zeros(1, rank)) for m in shapes}
    centroids = _centroids(entries)
    for i in range(entries):
        name = f"d{i:05d}"
        entry = write_entry(store, name, small, centroids[i], lora_alpha=2 * rank,
                            metadata={"navigator": "bench", "embedding_dim": DIM, "domain": name})
        link = entry / f".{WEIGHTS_FILE}"
        os.link(root / "pool" / f"pool{i % pool:04d}" / WEIGHTS_FILE, link)
        os.replace(link, entry / WEIGHTS_FILE)
        bar.update(1)
    bar.close()
    stamp.write_text(json.dumps(want))
    return store


def library_dir(root: Path, store: Path, n: int) -> Path:
    """A library of the first n store entries (symlinked entry folders)."""
    lib = root / f"lib{n}"
    if lib.is_dir() and len(os.listdir(lib)) == n:
        return lib
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir()
    for i in range(n):
        os.symlink(store / f"d{i:05d}", lib / f"d{i:05d}")
    return lib


def decision_ms(lib, queries, args) -> list[float]:
    """Seconds-per-embedding samples of the node's decision (debouncer + trigger, retrieval, support,
    coverage) on a stream of `queries`, with the fusion of the first one active."""
    from semla_ros.core.coverage import CoverageMonitor
    from semla_ros.core.debounce import DomainShiftDebouncer
    from semla_ros.core.decider import trigger_rules
    from semla_ros.core.retrieval import retrieve
    from semla_ros.core.support import frame_support

    s = SegmenterSettings(top_k=args.top_k, temperature=args.temperature, warmup_frames=1)   # the default trigger
    debouncer, monitor = DomainShiftDebouncer(s, 1.0, **trigger_rules(s, lib)), CoverageMonitor()
    first = retrieve(queries[0], lib.index, s.top_k, s.temperature, s.metric)
    debouncer.update(queries[0], 0.0)
    debouncer.propose(queries[0], 0.0)
    names = [lib.names[i] for i in first.indices]
    times = []
    for i, q in enumerate(queries[1:], 1):
        t = time.perf_counter()
        r = retrieve(q, lib.index, s.top_k, s.temperature, s.metric)   # once per embedding, as the decider does
        debouncer.update(q, 0.1 * i, candidates=r.indices)
        frame_support(q, lib, r, s.metric, names, first.weights)
        monitor.observe(q, lib, s, found=r, now=0.1 * i)
        times.append(time.perf_counter() - t)
    return times


def _drop_page_cache(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(args) -> dict:
    """One configuration, in this (fresh) process."""
    import gc

    import torch

    from semla_ros.catseg.build import build_catseg
    from semla_ros.catseg.predictor import CatSegPredictor
    from semla_ros.core.fusion import WeightStager
    from semla_ros.core.library import AdapterLibrary
    from semla_ros.core.retrieval import retrieve

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_catseg(args.config).eval()
    predictor = CatSegPredictor(model, ["road", "sky"])
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    lib = AdapterLibrary.open(args.library, navigator_dim=DIM, model=model)
    if args.mode == "eager":
        lib.cache.resize(1 << 30)
        for e in lib.entries:
            _ = e.factors   # reads them into the cache
    open_s = time.perf_counter() - start
    gc.collect()
    after = rss_mb()
    n = len(lib)
    rng = np.random.default_rng(1)
    centroids = lib.centroids                     # made now, after the RSS reading: retrieval does not use it
    domains = rng.choice(n, size=args.queries, replace=n < args.queries)
    queries = [centroids[j] + 0.1 * rng.normal(size=DIM) for j in domains]
    fast, exact, same = [], [], True
    for i, q in enumerate(queries):
        t = time.perf_counter()
        r = retrieve(q, lib.index, args.top_k, args.temperature)
        fast.append(time.perf_counter() - t)
        if i < args.exact_queries:
            t = time.perf_counter()
            full = retrieve(q, centroids, args.top_k, args.temperature)
            exact.append(time.perf_counter() - t)
            same &= np.array_equal(r.indices, full.indices) and np.array_equal(r.weights, full.weights)
    decision = decision_ms(lib, queries, args)

    stager = WeightStager(model, lib.target_modules)
    cold, warm, read = [], [], []
    with torch.no_grad():
        warmup = lib.select(queries[-1], args.top_k, args.temperature, check=stager.check_adapter)   # staging buffers
        predictor.load_weights(stager.stage_fusion(warmup.entries, warmup.retrieval.weights).weights)
        del warmup
        for q in queries[: args.swaps]:
            if args.mode == "lazy":      # cold: nothing cached, the files' pages not in the OS cache either
                lib.cache.clear()
                for row in retrieve(q, lib.index, args.top_k, args.temperature).indices:
                    _drop_page_cache(lib.entries[row].path / "adapter_model.safetensors")
            for times in ((cold, warm) if args.mode == "lazy" else (warm,)):
                t = time.perf_counter()
                selection = lib.select(q, args.top_k, args.temperature, check=stager.check_adapter)
                t_read = time.perf_counter() - t
                predictor.load_weights(stager.stage_fusion(selection.entries, selection.retrieval.weights).weights)
                times.append(time.perf_counter() - t)
                if times is cold:
                    read.append(t_read)
    gc.collect()
    ms = lambda values: 1e3 * statistics.median(values) if values else float("nan")   # noqa: E731
    return {"mode": args.mode, "entries": n, "skipped": len(lib.skipped), "open_s": open_s,
            "rss_open_mb": after - before, "retrieve_ms": ms(fast), "retrieve_min_ms": 1e3 * min(fast),
            "exact_ms": ms(exact), "identical": bool(same), "decision_ms": ms(decision),
            "cold_ms": ms(cold), "cold_read_ms": ms(read), "warm_ms": ms(warm), "rss_end_mb": rss_mb() - before,
            "cache_mb": lib.cache.stats().bytes / 2 ** 20, "threads": torch.get_num_threads()}


def _child(args, library: Path, mode: str) -> dict:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "semla_ros.bench.library", "--child", "--mode", mode, "--library", str(library),
           "--config", args.config, "--top-k", str(args.top_k), "--temperature", repr(args.temperature),
           "--queries", str(args.queries),
           "--exact-queries", str(args.exact_queries), "--swaps", str(args.swaps), "--threads", str(args.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the {mode} measurement of {library} failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sizes(text: str) -> list[int]:
    """`40,250,1000`: library sizes, each at least 1."""
    return [positive_int(v.strip()) for v in text.split(",") if v.strip()]


def check_dir(root: Path) -> None:
    """A --dir must be empty or one this benchmark made (its marker file): the benchmark deletes and rebuilds
    what it finds there, so a folder holding anything else is refused before anything is touched."""
    check_output_folder(root, "--dir")
    if root.is_dir() and any(root.iterdir()) and not (root / DIR_MARKER).is_file():
        raise ValueError(f"--dir {root} holds files this benchmark did not make; give an empty or new folder "
                         "(or one an earlier semla-bench library run used)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semla-bench library", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[40, 1000, 10000], help="library sizes (lazy loading)")
    parser.add_argument("--eager-sizes", type=_sizes, default=[40],
                        help="sizes also measured with every factor read at open (needs 8.3 MB RAM per adapter)")
    parser.add_argument("--pool", type=positive_int, default=64, help="distinct adapter files on disk")
    parser.add_argument("--config", default="vitb16_384")
    parser.add_argument("--rank", type=int, default=8)
    add_options(parser, SegmenterSettings, only=("top_k", "temperature"))   # the node's defaults
    parser.add_argument("--queries", type=positive_int, default=200)
    parser.add_argument("--exact-queries", type=positive_int, default=30)
    parser.add_argument("--swaps", type=positive_int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the measured process (0: default)")
    parser.add_argument("--dir", type=Path, default=None, help="where the libraries go (default: a temp dir, removed)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="lazy", help=argparse.SUPPRESS)
    parser.add_argument("--library", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0

    if args.dir is not None:
        check_dir(args.dir)
    shapes = _target_shapes(args.config)
    per_adapter = sum(args.rank * (o + i) for o, i in shapes.values()) * 4
    root = args.dir or Path(tempfile.mkdtemp(prefix="semla-bench-library-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / DIR_MARKER).write_text("made by semla-bench library; its files here are rebuilt as needed\n")
    biggest = max(args.sizes + args.eager_sizes)
    pool = min(args.pool, biggest)
    need = pool * per_adapter + biggest * 64 * 1024
    free = shutil.disk_usage(root).free
    if need > free // 2:
        raise ValueError(f"--dir {root}: {need / 2 ** 30:.1f} GB needed, {free / 2 ** 30:.1f} GB free (lower --pool "
                         "or give another --dir)")
    print(f"config {args.config}: {len(shapes)} target modules, r={args.rank}, {per_adapter / 1e6:.1f} MB per adapter; "
          f"K={args.top_k}; {pool} distinct adapter files ({pool * per_adapter / 1e9:.2f} GB) hard-linked by "
          f"{biggest} entries in {root}")
    try:
        start = time.perf_counter()
        store = build_store(root, shapes, biggest, pool, args.rank, args.quiet)
        print(f"library files ready in {time.perf_counter() - start:.0f} s")
        runs = [(n, "lazy") for n in args.sizes] + [(n, "eager") for n in args.eager_sizes]
        rows = []
        with progress_bar(total=len(runs), desc="measure", unit="run", quiet=args.quiet) as bar:
            for n, mode in sorted(runs, key=lambda r: (r[0], r[1] != "eager")):
                bar.set_description(f"measure {mode} {n}")
                rows.append(_child(args, library_dir(root, store, n), mode))
                bar.update(1)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"{'loading':8s} {'entries':>7s} {'open s':>7s} {'RSS +MB':>8s} {'MB/100':>7s} {'retrieve ms':>11s} "
          f"{'(min)':>6s} {'exact ms':>9s} {'same':>5s} {'decision ms':>11s} {'swap cold ms':>12s} {'(read ms)':>9s} "
          f"{'swap warm ms':>12s} "
          f"{'cold/warm':>9s}")
    for r in rows:
        print(f"{r['mode']:8s} {r['entries']:7d} {r['open_s']:7.2f} {r['rss_open_mb']:8.1f} "
              f"{100 * r['rss_open_mb'] / r['entries']:7.2f} {r['retrieve_ms']:11.3f} {r['retrieve_min_ms']:6.3f} "
              f"{r['exact_ms']:9.3f} "
              f"{'yes' if r['identical'] else 'NO':>5s} {r['decision_ms']:11.3f} {r['cold_ms']:12.0f} "
              f"{r['cold_read_ms']:9.0f} "
              f"{r['warm_ms']:12.0f} {r['cold_ms'] / r['warm_ms']:9.2f}".replace("nan", "  -"))
    lazy = sorted((r for r in rows if r["mode"] == "lazy"), key=lambda r: r["entries"])
    for small, large in pairwise(lazy):
        slope = 100 * (large["rss_open_mb"] - small["rss_open_mb"]) / (large["entries"] - small["entries"])
        print(f"RSS after open grows by {slope:.2f} MB per 100 adapters from {small['entries']} to "
              f"{large['entries']} entries (lazy)")
    print(f"\nretrieve: top-{args.top_k} through the library index (median of {args.queries} queries); exact: the "
          f"full float64 pass (median of {args.exact_queries}); same: identical rows and weights on every query. "
          "decision: per embedding, debouncer + the default trigger + retrieval + support + coverage (median). "
          f"swap: select + stage + copy into the model, median of {args.swaps}; cold: the {args.top_k} adapters "
          "not cached and their pages dropped from the OS cache. torch threads: " + str(rows[0]["threads"]))
    return 0 if all(r["identical"] and r["skipped"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
