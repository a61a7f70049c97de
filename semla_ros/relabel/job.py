"""The relabelling job: embed every frame, cluster, fuse once per cluster, segment, write, compare, report.

Steps (each resumable through the job folder, see state.py):
1. embed: batches of `batch_size` frames (fixed index ranges) through the navigator; an unreadable
   message is skipped and counted;
2. cluster: per recording (default) or over all recordings (`scope="global"`), see cluster.py;
3. per cluster: retrieval for its centroid, one fusion through the node's path
   (`SemlaSegmenter.fuse_now`), its frames segmented in batches with that fusion;
4. write: frames.csv, masks (PNG), and for bag output a new bag (bag.py);
5. compare (optional): per-image SemLA and the node's debounced policy on the same frames (compare.py);
6. report.json and report.md (report.py).
Steps 1 and 3 are run by a `workers` object: `LocalWorkers` in this process, `ray_runner.RayWorkers` on
Ray; both run the same units (work.py), so they compute the same masks.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, get_args

import numpy as np

from ..catseg.checkpoint import state_dict_digest
from ..core import fields
from ..core.fields import setting
from ..core.progress import progress_bar
from .bag import MaskBagWriter, Storage
from .cluster import ClusterSettings, cluster_embeddings
from .recording import RecordingError, safe_name
from .state import FrameTable, JobFolder, write_atomic, write_json
from .work import (
    EmbeddedBatch,
    Fusion,
    activate_fusion,
    cluster_fusion,
    embed_recording,
    frame_support,
    segment_batches,
)

FRAME_COLUMNS = ("index", "name", "sec", "nanosec", "cluster", "distance_to_cluster_centroid", "nearest_distance",
                 "relative_distance", "support_score", "scale_free_support", "active_support",
                 "active_scale_free_support", "top_adapter", "active_is_top")


Scope = Literal["recording", "global"]
Output = Literal["auto", "bag", "png"]
SCOPES: tuple[str, ...] = get_args(Scope)
OUTPUTS: tuple[str, ...] = get_args(Output)


@dataclass(frozen=True)
class RelabelSettings:
    batch_size: int = setting(16, low=1, help="frames per navigator / network batch (fixed index ranges: part of "
                                               "the state)")
    cluster: ClusterSettings = setting(default_factory=ClusterSettings, help="clustering")
    scope: Scope = setting("recording", help="cluster each recording on its own, or all recordings together")
    output: Output = setting("auto", help="auto: a bag for bag inputs, PNG masks for folders")
    namespace: str = setting("/semla", help="topic namespace in the output bag")
    storage: Storage = setting("mcap", help="output bag storage")
    compare: bool = setting(True, help="per-image SemLA and the debounced replay on the same frames")
    threads: int = setting(0, low=0, help="torch threads (0: torch's default)")

    def __post_init__(self):
        fields.validate(self)

    def state_json(self) -> dict:
        """What decides the job's state on disk (a change needs --restart)."""
        return {"batch_size": self.batch_size, "cluster": dataclasses.asdict(self.cluster), "scope": self.scope}


@dataclass(frozen=True)
class Cluster:
    id: str
    members: dict[str, np.ndarray]     # recording name -> frame indices
    centroid: np.ndarray
    fusion: Fusion
    mean_distance: float               # of its frames to the centroid

    @property
    def size(self) -> int:
        return int(sum(len(v) for v in self.members.values()))


@dataclass(frozen=True)
class SegmentTask:
    cluster: str
    recording: object
    fusion: Fusion
    batches: tuple[tuple[int, ...], ...]


@dataclass
class SegmentResult:
    task: SegmentTask
    batch: tuple[int, ...]
    frames: list[tuple[int, str]]      # (index, name) of the masks, same order
    masks: list[np.ndarray]
    skipped: list[tuple[int, str]]
    seconds: float
    fusion_ms: float = 0.0             # > 0 on the batch whose worker made the fusion


class LocalWorkers:
    """Runs the job's units in this process, on the job's engine."""

    def __init__(self, build):
        self.build = build
        self._active: Fusion | None = None

    def embed(self, jobs, batch_size: int) -> Iterator[EmbeddedBatch]:
        for recording, done in jobs:
            yield from embed_recording(self.build.navigator, recording, batch_size, done)

    def segment(self, tasks) -> Iterator[SegmentResult]:
        b = self.build
        for task in tasks:
            fusion_ms = 0.0
            if task.fusion != self._active:
                fusion_ms = activate_fusion(b.segmenter, b.library, task.fusion)
                self._active = task.fusion
            start = time.perf_counter()
            for batch, frames, masks, skipped in segment_batches(b.predictor, b.backend, task.recording,
                                                                 list(task.batches)):
                now = time.perf_counter()
                yield SegmentResult(task, batch, frames, masks, skipped, now - start, fusion_ms)
                start, fusion_ms = time.perf_counter(), 0.0

    def close(self) -> None:
        """Back to the base model."""
        if self._active is not None:
            self.build.segmenter.fuse_now([], [])
            self._active = None


class RelabelJob:
    """One job over one or more recordings, writing into `out`. `build` is an EngineBuild (model,
    navigator, library, segmenter); `workers` defaults to LocalWorkers(build)."""

    def __init__(self, build, recordings, out, settings: RelabelSettings = RelabelSettings(), *, workers=None,
                 restart: bool = False, progress: bool = True, log: Callable[[str], None] = print):
        if build.library is None or len(build.library) == 0:
            raise ValueError("relabelling needs an adapter library with at least one entry")
        if build.navigator is None:
            raise ValueError("relabelling needs a navigator to embed frames")
        self.build = build
        self.settings = settings
        self.recordings = list(recordings)
        if not self.recordings:
            raise ValueError("no recording to relabel")
        names = [r.name for r in self.recordings]
        if len(set(names)) != len(names) or any(safe_name(n) != n for n in names):
            raise ValueError(f"recording names must be unique plain file names, got {names}")
        self.by_name = {r.name: r for r in self.recordings}
        empty = [r.path for r in self.recordings if r.count == 0]
        if empty:
            raise RecordingError(f"nothing to relabel in {', '.join(map(str, empty))}: no image "
                                 f"{'message on the topic' if self.recordings[0].kind == 'bag' else 'file'}")
        self.folder = JobFolder(out)
        self.folder.check_target([r.path for r in self.recordings])
        self.workers = workers or LocalWorkers(build)
        self.restart = restart
        self.log = log
        self.classes = tuple(build.predictor.class_names)
        self._bar = functools.partial(progress_bar, quiet=not progress)
        self.resumed: dict[str, int] = {"embedding_batches": 0, "clusters": 0, "mask_batches": 0, "outputs": 0,
                                        "comparisons": 0}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ what the job is
    @functools.cached_property
    def manifest(self) -> dict:
        """What the job is (job.json): a rerun resumes only the same job."""
        b = self.build
        spec = b.spec
        return {"format": 1, "inputs": [r.describe() | {"name": r.name} for r in self.recordings],
                "engine": {"model_config": spec.model_config, "checkpoint": spec.checkpoint,
                           "model_digest": state_dict_digest(b.predictor.model, 16),
                           "navigator": b.navigator.id, "library": str(b.library.root),
                           "library_fingerprint": b.library.fingerprint, "classes": list(self.classes),
                           "sliding_window": spec.sliding_window},
                "retrieval": {"top_k": spec.settings.top_k, "temperature": spec.settings.temperature,
                              "metric": spec.settings.metric},
                "state": self.settings.state_json()}

    # ------------------------------------------------------------------ the steps
    def run(self) -> dict:
        import torch

        from .report import build_report, write_report

        threads = torch.get_num_threads()
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        start = time.perf_counter()
        try:
            resumed = self.folder.claim(self.manifest, self.restart)
            if resumed:
                self.log(f"resuming the job in {self.folder.root}")
            tables = self.embed()
            clusters = self.cluster(tables)
            segment_info = self.segment(tables, clusters)
            outputs = self.write(tables, clusters)
            comparison = self.compare(tables, clusters) if self.settings.compare else None
        finally:
            self.workers.close()
            torch.set_num_threads(threads)
        self.timings["wall_s"] = time.perf_counter() - start
        report = build_report(self, tables, clusters, segment_info, outputs, comparison)
        write_report(self.folder.root, report)
        return report

    def embed(self) -> dict[str, FrameTable]:
        batch = self.settings.batch_size
        jobs, pending = [], 0
        for rec in self.recordings:
            done = self.folder.done_batches(rec.name)
            self.resumed["embedding_batches"] += len(done)
            if len(done) < math.ceil(rec.count / batch):
                jobs.append((rec, done))
                pending += rec.count - min(rec.count, len(done) * batch)
        start = time.perf_counter()
        bar = self._bar(total=pending, desc="embed", unit="frame")
        for b in self.workers.embed(jobs, batch):
            self.folder.save_batch(b)
            bar.update(len(b.indices) + len(b.skipped))
        bar.close()
        self.timings["embed_wall_s"] = time.perf_counter() - start
        tables = {r.name: self.folder.frame_table(r.name, self.build.navigator.dim) for r in self.recordings}
        for rec in self.recordings:
            table = tables[rec.name]
            if len(table) == 0:
                first = f"; first: {table.skipped[0][1]}" if table.skipped else ""
                raise RecordingError(f"{rec.path}: no readable frame ({len(table.skipped)} unreadable{first}); "
                                     "nothing relabelled")
        return tables

    def cluster(self, tables: dict[str, FrameTable]) -> list[Cluster]:
        start = time.perf_counter()
        library, retrieval = self.build.library, self.build.spec.settings
        spacing = library.median_inter_centroid_distance
        groups = ([("all", list(tables))] if self.settings.scope == "global"
                  else [(name, [name]) for name in tables])
        clusters = []
        for prefix, names in groups:
            names = [n for n in names if len(tables[n])]
            if not names:
                continue
            x = np.concatenate([tables[n].embeddings for n in names]).astype(np.float64)
            owner = np.concatenate([np.full(len(tables[n]), i) for i, n in enumerate(names)])
            position = np.concatenate([np.arange(len(tables[n])) for n in names])
            labels = cluster_embeddings(x, spacing, self.settings.cluster)
            for k in range(int(labels.max()) + 1):
                rows = np.flatnonzero(labels == k)
                centroid = x[rows].mean(axis=0)
                members = {names[i]: tables[names[i]].indices[position[rows[owner[rows] == i]]]
                           for i in np.unique(owner[rows])}
                clusters.append(Cluster(f"{prefix}-c{k:03d}", members, centroid,
                                        cluster_fusion(library, centroid, retrieval),
                                        float(np.linalg.norm(x[rows] - centroid, axis=1).mean())))
        self.timings["cluster_s"] = time.perf_counter() - start
        write_json(self.folder.root / "clusters.json", {
            "median_inter_centroid_distance": spacing, "settings": dataclasses.asdict(self.settings.cluster),
            "scope": self.settings.scope,
            "clusters": [{"id": c.id, "size": c.size, "mean_distance_to_centroid": c.mean_distance,
                          "frames": {n: v.tolist() for n, v in c.members.items()}, **c.fusion.to_json()}
                         for c in clusters]})
        return clusters

    def segment(self, tables: dict[str, FrameTable], clusters: list[Cluster]) -> dict[str, dict]:
        batch = self.settings.batch_size
        names = {r: dict(zip(t.indices.tolist(), t.names, strict=True)) for r, t in tables.items()}
        tasks, remaining, info = [], {}, {}
        for c in clusters:
            marker = self.folder.segment_done(c.id)
            if marker is not None:
                self.resumed["clusters"] += 1
                info[c.id] = marker
                continue
            remaining[c.id] = 0
            info[c.id] = {"cluster": c.id, "frames": c.size, "seconds": 0.0, "fusion_ms": 0.0, "skipped": [],
                          "resumed_batches": 0}
            for rec, idx in c.members.items():
                batches = [tuple(int(i) for i in idx[s:s + batch]) for s in range(0, len(idx), batch)]
                pending = tuple(b for b in batches
                                if not all(self.folder.mask_path(rec, names[rec][i]).is_file() for i in b))
                info[c.id]["resumed_batches"] += len(batches) - len(pending)
                self.resumed["mask_batches"] += len(batches) - len(pending)
                if pending:
                    tasks.append(SegmentTask(c.id, self.by_name[rec], c.fusion, pending))
                    remaining[c.id] += len(pending)
        for cid in [cid for cid, n in remaining.items() if n == 0]:
            write_json(self.folder.segment_marker(cid), info[cid])
        start = time.perf_counter()
        bar = self._bar(total=sum(len(i) for t in tasks for i in t.batches), desc="segment", unit="frame")
        for r in self.workers.segment(tasks):
            rec = r.task.recording.name
            for (_index, name), mask in zip(r.frames, r.masks, strict=True):
                self.folder.save_mask(rec, name, mask, len(self.classes))
            entry = info[r.task.cluster]
            entry["seconds"] += r.seconds
            entry["fusion_ms"] += r.fusion_ms
            entry["skipped"] += [[i, reason] for i, reason in r.skipped]
            remaining[r.task.cluster] -= 1
            if remaining[r.task.cluster] == 0:
                write_json(self.folder.segment_marker(r.task.cluster), entry)
            bar.update(len(r.batch))
        bar.close()
        self.timings["segment_wall_s"] = time.perf_counter() - start
        return info

    def _frame_rows(self, name: str, table: FrameTable, clusters: list[Cluster]) -> list[dict]:
        library, retrieval = self.build.library, self.build.spec.settings
        of = {}
        for c in clusters:
            for i in c.members.get(name, ()):
                of[int(i)] = c
        rows = []
        for pos, index in enumerate(table.indices.tolist()):
            c, e = of[index], table.embeddings[pos].astype(np.float64)
            rows.append({"index": index, "name": table.names[pos], "sec": int(table.sec[pos]),
                         "nanosec": int(table.nanosec[pos]), "frame_id": table.frame_ids[pos],
                         "log_ns": int(table.log_ns[pos]), "cluster": c.id,
                         "distance_to_cluster_centroid": float(np.linalg.norm(e - c.centroid)),
                         **frame_support(e, library, retrieval, c.fusion)})
        return rows

    def output_kind(self, recording) -> str:
        if self.settings.output != "auto":
            return self.settings.output
        return "bag" if recording.kind == "bag" else "png"

    def write(self, tables: dict[str, FrameTable], clusters: list[Cluster]) -> dict[str, dict]:
        start = time.perf_counter()
        outputs = {}
        for rec in self.recordings:
            table, root = tables[rec.name], self.folder.root / rec.name
            rows = self._frame_rows(rec.name, table, clusters)
            text = io.StringIO()
            writer = csv.DictWriter(text, FRAME_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            write_atomic(root / "frames.csv", text.getvalue().encode())
            kind = self.output_kind(rec)
            out = {"kind": kind, "masks": str(root / "masks"), "frames": len(rows)}
            if kind == "bag":
                bag = root / "relabelled"
                out["bag"] = str(bag)
                if (bag / "metadata.yaml").is_file():
                    self.resumed["outputs"] += 1
                else:
                    self._write_bag(bag, rec.name, rows)
            outputs[rec.name] = out
        self.timings["write_s"] = time.perf_counter() - start
        return outputs

    def _write_bag(self, path: Path, recording: str, rows: list[dict]) -> None:
        from types import SimpleNamespace

        writer = MaskBagWriter(path, self.classes, self.settings.namespace, self.settings.storage)
        bar = self._bar(total=len(rows), desc=f"write {recording}", unit="frame")
        try:
            for row in rows:
                writer.write(SimpleNamespace(**row), self.folder.load_mask(recording, row["name"]), row)
                bar.update(1)
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        writer.close()

    def compare(self, tables: dict[str, FrameTable], clusters: list[Cluster]) -> dict:
        from .compare import compare_recording

        results = {}
        for rec in self.recordings:
            path = self.folder.root / rec.name / "compare.json"
            if path.is_file():
                self.resumed["comparisons"] += 1
                results[rec.name] = json.loads(path.read_text())
                continue
            results[rec.name] = compare_recording(self.build, rec, self.folder, self._bar)
            write_json(path, results[rec.name])
        return results
