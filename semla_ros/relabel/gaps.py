"""Proposals of new library entries from frames the library does not cover (`semla-library gaps`).

Sources: a capture folder of the node's coverage monitor (core/capture.py), or a relabelling job
folder (its stored embeddings, replayed per recording through the node's CoverageMonitor: the frames
of stretches the node would flag as a gap, not scattered uncovered frames).
The frames are clustered like a relabelling job's (cluster.py: the library's spacing sets the
scale); each cluster is one proposed entry: how many frames, their centroid (what the entry's
centroid would be if trained on them, SemLA's train_average_embedding), the nearest existing
adapters and how far they are in units of the spacing.

`export_proposals` writes each proposal as a domain folder (images/, classes.txt, proposal.json),
ready for labels/ and `semla-library train`. Pseudo-labels are an option for a first adapter: the
current model's masks with the proposal's own SemLA fusion (relabelling jobs: the job's masks) go
into labels/, and PSEUDO_LABELS.txt and proposal.json say that they are model predictions, not
ground truth.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.capture import CLASSES, IMAGES, read_capture
from ..core.coverage import GAP, CoverageMonitor, CoverageSettings
from ..core.retrieval import distances
from .cluster import ClusterSettings, cluster_embeddings

DEFAULT_CLUSTER = ClusterSettings()   # frozen: one shared default instance

PSEUDO_NOTE = ("labels/ holds PSEUDO-LABELS: masks predicted by the current model (with this proposal's SemLA "
               "fusion), not ground truth. An adapter trained on them learns the model's own mistakes too; "
               "replace them with real labels where you can.\n")


@dataclass
class Proposal:
    name: str
    frames: list[str]                       # capture names, or "<recording>/<name>" of a relabelling job
    centroid: np.ndarray
    nearest: list[tuple[str, float, float]]   # (adapter, distance, distance / spacing), nearest first
    mean_relative_distance: float            # of its frames to their nearest adapter
    records: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "frames": len(self.frames), "frame_names": self.frames,
                "centroid": self.centroid.tolist(), "mean_relative_distance": self.mean_relative_distance,
                "nearest_adapters": [{"name": n, "distance": d, "relative_distance": r} for n, d, r in self.nearest]}


def propose(names, embeddings, library, settings: ClusterSettings = DEFAULT_CLUSTER, prefix: str = "gap",
            nearest: int = 3) -> list[Proposal]:
    """Cluster uncovered frames' embeddings; one proposal per cluster, largest first."""
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) == 0:
        return []
    if x.shape[1] != library.dim:
        raise ValueError(f"embeddings have dimension {x.shape[1]}, the library's centroids {library.dim}: "
                         "they come from another navigator")
    spacing = library.median_inter_centroid_distance
    labels = cluster_embeddings(x, spacing, settings)

    def rel(v):
        return float(v / spacing) if math.isfinite(spacing) and spacing > 0 else math.nan

    out = []
    for k in range(int(labels.max()) + 1):
        rows = np.flatnonzero(labels == k)
        centroid = x[rows].mean(axis=0)
        d = distances(centroid, library.centroids)
        order = np.argsort(d, kind="stable")[:nearest]
        per_frame = np.array([distances(x[i], library.centroids).min() for i in rows])
        out.append(Proposal(f"{prefix}-{k:03d}", [names[i] for i in rows], centroid,
                            [(library.names[i], float(d[i]), rel(d[i])) for i in order], rel(per_frame.mean())))
    out.sort(key=lambda p: -len(p.frames))
    for i, p in enumerate(out):
        p.name = f"{prefix}-{i:03d}"
    return out


def from_capture(capture_dir, library,
                 settings: ClusterSettings = DEFAULT_CLUSTER) -> tuple[list[Proposal], dict]:
    names, embeddings, records, info = read_capture(capture_dir)
    navigator = info.get("navigator")
    known = {e.metadata.get("navigator") for e in library.entries} - {None}
    if navigator and known and navigator not in known:
        raise ValueError(f"the captured embeddings come from navigator {navigator!r}, the library's centroids "
                         f"from {sorted(known)}: they do not compare")
    proposals = propose(names, embeddings, library, settings)
    by_name = dict(zip(names, records, strict=True))
    for p in proposals:
        p.records = [by_name[n] for n in p.frames]
    return proposals, {"source": "capture", "frames": len(names), "navigator": navigator}


def sustained_uncovered(embeddings, library, coverage: CoverageSettings,
                        retrieval) -> tuple[np.ndarray, np.ndarray]:
    """(uncovered, in a gap) per frame of one recording (embeddings in frame order), as the node would judge
    them: each frame through the node's own CoverageMonitor (one implementation of "uncovered" and of the
    window); an uncovered frame is in a gap when its window reached GAP (`gap_fraction` of `window` embedded
    frames uncovered), the uncovered frames of the window that confirmed it included. Scattered uncovered
    frames of a covered drive are in no gap, as on the node. `retrieval`: the job's top_k, temperature, metric."""
    monitor = CoverageMonitor(coverage.replace(capture_dir=""))
    window: deque[int] = deque(maxlen=coverage.window)
    uncovered, keep = np.zeros(len(embeddings), dtype=bool), np.zeros(len(embeddings), dtype=bool)
    for i, e in enumerate(embeddings):
        report = monitor.observe(e, library, retrieval)
        if report.uncovered:
            uncovered[i] = True
            window.append(i)
        while window and window[0] <= i - coverage.window:
            window.popleft()
        if report.status == GAP:
            keep[list(window)] = True
    return uncovered, keep


def from_relabel_job(job_dir, library, settings: ClusterSettings = DEFAULT_CLUSTER,
                     coverage: CoverageSettings | None = None) -> tuple[list[Proposal], dict]:
    """Frames of a finished relabelling job (frames.csv + its stored embeddings) in stretches the node's
    coverage monitor would flag as a gap (`sustained_uncovered`), per recording in frame order."""
    from ..core.settings import SegmenterSettings
    from .state import JobFolder

    coverage = coverage or CoverageSettings()
    job_dir = Path(job_dir)
    manifest = json.loads((job_dir / "job.json").read_text())
    known = {e.metadata.get("navigator") for e in library.entries} - {None}
    if known and manifest["engine"]["navigator"] not in known:
        raise ValueError(f"the job's embeddings come from navigator {manifest['engine']['navigator']!r}, the "
                         f"library's centroids from {sorted(known)}: they do not compare")
    retrieval = SegmenterSettings().replace(**manifest.get("retrieval", {}))
    folder = JobFolder(job_dir)
    names, embeddings, total, uncovered = [], [], 0, 0
    for item in manifest["inputs"]:
        rec = item["name"]
        table = folder.frame_table(rec, library.dim)
        total += len(table)
        flagged, keep = sustained_uncovered(table.embeddings, library, coverage, retrieval)
        uncovered += int(flagged.sum())
        for pos in np.flatnonzero(keep):
            names.append(f"{rec}/{table.names[pos]}")
            embeddings.append(table.embeddings[pos])
    proposals = propose(names, np.array(embeddings).reshape(len(names), -1) if names else np.zeros((0, library.dim)),
                        library, settings)
    return proposals, {"source": "relabel", "frames": total, "uncovered": uncovered, "in_gaps": len(names),
                       "max_relative_distance": coverage.max_relative_distance, "window": coverage.window,
                       "gap_fraction": coverage.gap_fraction}


def export_proposals(proposals, source, out_dir, classes, pseudo_labels=None) -> list[Path]:
    """One domain folder per proposal under `out_dir`. `source` is the capture folder or the job folder;
    `pseudo_labels(proposal, names) -> {name: class ids}` fills labels/ (clearly marked) when given. A folder of
    an earlier run is never mixed into (refused before anything is written); each is built under a hidden name
    and renamed when complete, so an interruption leaves nothing that looks finished."""
    from PIL import Image

    source, out_dir = Path(source), Path(out_dir)
    taken = [p.name for p in proposals if (out_dir / p.name).exists()]
    if taken:
        raise ValueError(f"--out {out_dir} already holds {', '.join(taken)} (an earlier run?); give an empty --out")
    written = []
    for p in proposals:
        final = out_dir / p.name
        target = out_dir / f".{p.name}.partial"
        shutil.rmtree(target, ignore_errors=True)
        (target / IMAGES).mkdir(parents=True)
        files = [n.replace("/", "__") for n in p.frames]
        if (source / "job.json").is_file():
            _extract_job_frames(source, p.frames, target / IMAGES)
        else:
            for n in p.frames:
                shutil.copyfile(source / IMAGES / f"{n}.png", target / IMAGES / f"{n}.png")
        (target / CLASSES).write_text("".join(f"{c}\n" for c in classes))
        meta = p.to_json() | {"source": str(source), "labels": "none: add labels/<name>.png (train ids, 255 ignored)"}
        if pseudo_labels is not None:
            (target / "labels").mkdir(exist_ok=True)
            for name, mask in pseudo_labels(p, files).items():
                Image.fromarray(np.asarray(mask, np.uint8)).save(target / "labels" / f"{name}.png")
            (target / "PSEUDO_LABELS.txt").write_text(PSEUDO_NOTE)
            meta["labels"] = "PSEUDO-LABELS: the current model's masks, not ground truth"
        (target / "proposal.json").write_text(json.dumps(meta, indent=1))
        target.rename(final)
        written.append(final)
    return written


def _extract_job_frames(job_dir: Path, frames: list[str], images: Path) -> None:
    """Write the job's frames `<recording>/<name>` as images/<recording>__<name>.png (read from the recordings)."""
    from PIL import Image

    from .recording import open_recording

    manifest = json.loads((job_dir / "job.json").read_text())
    wanted: dict[str, set[str]] = {}
    for f in frames:
        rec, _, name = f.partition("/")
        wanted.setdefault(rec, set()).add(name)
    for item in manifest["inputs"]:
        names = wanted.get(item["name"])
        if not names:
            continue
        with open(job_dir / item["name"] / "frames.csv") as f:
            index = {int(r["index"]) for r in csv.DictReader(f) if r["name"] in names}
        rec = open_recording(item["path"], item.get("topic"), None, item.get("rate_hz", 10.0), name=item["name"])
        for frame in rec.frames(skip=lambda i, index=index: i not in index):
            if hasattr(frame, "image"):
                Image.fromarray(frame.image).save(images / f"{item['name']}__{frame.name}.png")


def job_masks(job_dir, frames: list[str]) -> dict[str, np.ndarray]:
    """The relabelling job's own masks of `<recording>/<name>` frames (its pseudo-labels)."""
    from .state import JobFolder

    folder = JobFolder(job_dir)
    out = {}
    for f in frames:
        rec, _, name = f.partition("/")
        out[f"{rec}__{name}"] = folder.load_mask(rec, name)
    return out


def model_pseudo_labels(build, capture_dir):
    """`pseudo_labels` for a capture folder: each proposal's frames segmented by the current model with the
    fusion SemLA retrieves for the proposal's centroid (through the node's fusion path)."""
    from ..evaluation.dataset import read_image
    from .work import activate_fusion, cluster_fusion, predict_masks

    capture_dir = Path(capture_dir)

    def label(proposal: Proposal, files: list[str]) -> dict[str, np.ndarray]:
        activate_fusion(build.segmenter, build.library,
                        cluster_fusion(build.library, proposal.centroid, build.spec.settings))
        try:
            images = [read_image(capture_dir / IMAGES / f"{n}.png") for n in files]
            return dict(zip(files, predict_masks(build.predictor, build.backend, images), strict=True))
        finally:
            build.segmenter.fuse_now([], [])
    return label


@dataclass
class GapReport:
    """What `semla-library gaps` found in `source` and wrote."""

    source: Path
    library: object
    proposals: list[Proposal]
    info: dict
    written: list[Path] = field(default_factory=list)

    @property
    def is_job(self) -> bool:
        return self.info.get("source") == "relabel"

    def to_json(self) -> dict:
        return {**self.info, "proposals": [p.to_json() for p in self.proposals],
                "written": [str(w) for w in self.written]}

    def lines(self) -> list[str]:
        info, proposals, lib = self.info, self.proposals, self.library
        what = (f"{info['uncovered']} of {info['frames']} frames uncovered, {info['in_gaps']} of them in gaps (at "
                f"least {info['gap_fraction']:.0%} of {info['window']} embedded frames uncovered, the node's rule)"
                if self.is_job else f"{info['frames']} captured frames")
        out = [f"{self.source}: {what}; {len(proposals)} proposed entr{'y' if len(proposals) == 1 else 'ies'} "
               f"(library {lib.root}, median centroid spacing {lib.median_inter_centroid_distance:.4g})"]
        for p in proposals:
            near = ", ".join(f"{n} {r:.2f}x" for n, _, r in p.nearest)
            out.append(f"  {p.name}: {len(p.frames)} frames, {p.mean_relative_distance:.2f}x the spacing from the "
                       f"nearest adapter on average; nearest to its centroid: {near}")
        for w in self.written:
            labels = "PSEUDO-labels in labels/" if (w / "PSEUDO_LABELS.txt").is_file() else "add labels/ to train"
            out.append(f"  wrote {w} ({labels}); then: semla-library train {w} --library LIB --model ... "
                       "--checkpoint ...")
        return out


def find_gaps(source, library, cluster: ClusterSettings | None = None,
              coverage: CoverageSettings | None = None, out_dir=None,
              pseudo_labels: bool = False, engine_spec=None) -> GapReport:
    """Proposals from a capture folder or a relabelling job folder (`source`), written under `out_dir` when
    given. Pseudo-labels of a relabelling job are its own masks; of a capture folder, the masks of an engine
    built from `engine_spec` (an EngineSpec; its classes and library are set here). ValueError when the
    folders cannot be written as asked (no classes, no model for pseudo-labels)."""
    source, cluster = Path(source), cluster or ClusterSettings()
    if (source / "job.json").is_file():
        proposals, info = from_relabel_job(source, library, cluster, coverage or CoverageSettings())
    else:
        proposals, info = from_capture(source, library, cluster)
    report = GapReport(source, library, proposals, info)
    if out_dir is None or not proposals:
        return report
    pseudo = None
    if report.is_job:
        classes = json.loads((source / "job.json").read_text())["engine"]["classes"]
        if pseudo_labels:
            def pseudo(p, files):
                return job_masks(source, p.frames)
    else:
        from ..evaluation.dataset import read_classes

        classes_file = source / "classes.txt"
        classes = read_classes(classes_file) if classes_file.is_file() else []
        if pseudo_labels:
            if engine_spec is None:
                raise ValueError("--pseudo-labels on a capture folder needs --model (and --checkpoint)")
            from ..engine import build_engine

            spec = replace(engine_spec, library_path=str(library.root), classes=tuple(classes))
            pseudo = model_pseudo_labels(build_engine(spec).raise_for_errors(), source)
    if not classes:
        raise ValueError(f"no classes.txt in {source}: cannot write trainable folders")
    report.written = export_proposals(proposals, source, out_dir, classes, pseudo)
    return report
