"""What a library holds, as an operator reads it (`semla-library list`, `inspect`, `import`): its entries and
why any was skipped, the centroid distances, a deep check that reads every factor, and an official `loradb/`
copied into a library unchanged.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .fusion import WeightStager, fuse_deltas
from .library import AdapterLibrary

TABLE_MAX = 20   # entries up to which inspect prints the full distance table


def describe(lib: AdapterLibrary) -> dict:
    """Entries (rank, scaling, modules, centroid, navigator, training), skipped entries and the spacing."""
    entries = []
    for e in lib.entries:
        entries.append({"name": e.name, "rank": e.rank, "scaling": e.scaling, "modules": len(e.modules),
                        "dropped_inert_qkv": len(e.dropped), "centroid_dim": int(e.centroid.shape[0]),
                        "centroid_norm": float(np.linalg.norm(e.centroid)), "official_layout": e.official_layout,
                        "navigator": e.metadata.get("navigator"), "init": e.metadata.get("init"),
                        "profile": e.metadata.get("profile"),
                        "trainable_parameters": e.metadata.get("trainable_parameters")})
    return {"root": str(lib.root), "entries": entries, "skipped": [{"name": n, "reason": r} for n, r in lib.skipped],
            "median_inter_centroid_distance": lib.median_inter_centroid_distance}


def list_lines(lib: AdapterLibrary) -> list[str]:
    """One line per entry (with how it was trained: init and target profile; "-" for an added or official
    entry), then one per skipped entry with its reason."""
    lines = [f"{lib.root}: {len(lib)} entries, {len(lib.skipped)} skipped",
             f"  {'name':16s} {'r':>3s} {'scale':>6s} {'modules':>7s} {'dim':>5s}  {'init':11s} {'profile':7s}  "
             "layout    navigator"]
    for e in describe(lib)["entries"]:
        layout = "official" if e["official_layout"] else "ours"
        lines.append(f"  {e['name']:16s} {e['rank']:3d} {e['scaling']:6g} {e['modules']:7d} {e['centroid_dim']:5d}  "
                     f"{e['init'] or '-':11s} {e['profile'] or '-':7s}  "
                     f"{layout:8s}  {e['navigator'] or '(unknown: official centroid)'}")
    return lines + [f"  SKIPPED {n}: {r}" for n, r in lib.skipped]


def require_entries(lib: AdapterLibrary) -> AdapterLibrary:
    """The library when it has a usable entry; else the refusal, with why each entry was skipped (the one
    wording of `inspect`, `gaps` and the rest)."""
    if not lib.entries:
        why = "; ".join(f"{n}: {r}" for n, r in lib.skipped) or "it holds no entry folder"
        raise ValueError(f"--library {lib.root}: no usable entry ({why})")
    return lib


def distance_lines(lib: AdapterLibrary) -> list[str]:
    """Size, spacing, skipped entries and the centroid distance table (up to TABLE_MAX entries)."""
    c, names = lib.centroids, lib.names
    lines = [f"{lib.root}: {len(lib)} entries, centroid dim {lib.dim}, median inter-centroid distance "
             f"{lib.median_inter_centroid_distance:.4g}"]
    lines += [f"  SKIPPED {n}: {r}" for n, r in lib.skipped]
    if len(lib) > TABLE_MAX:
        return lines + [f"  (distance table omitted above {TABLE_MAX} entries; --map draws the centroids)"]
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    width = max(8, max(len(n) for n in names) + 1)
    lines.append(" " * width + "".join(f"{n[:9]:>10s}" for n in names))
    return lines + [f"{n:{width}s}" + "".join(f"{v:10.4g}" for v in row) for n, row in zip(names, d, strict=True)]


def deep_check(lib: AdapterLibrary, model=None, write=print) -> int:
    """Read every entry's factors, one at a time (nothing kept); write |dW| or why it is unusable (with
    `model`: also checked against its weights). Returns the number of unusable entries."""
    stager = WeightStager(model, lib.target_modules) if model is not None else None
    lib.cache.resize(0)
    bad = 0
    for e in lib.entries:
        try:
            held = e.load()
            if stager is not None:
                stager.check_adapter(held)
        except ValueError as exc:     # InvalidEntryError included
            bad += 1
            write(f"  BAD {e.name}: {exc}")
            continue
        norms = [float(d.norm()) for d in fuse_deltas([held], [1.0]).values()]
        write(f"  OK {e.name}: {len(norms)} modules, |dW|_F mean {np.mean(norms):.4g} max {np.max(norms):.4g}"
              + (f", {len(e.dropped)} inert q/k/v factors dropped (official layout)" if e.dropped else ""))
    write(f"deep check: {len(lib) - bad} of {len(lib)} entries usable"
          + ("" if stager is not None else " (give --model to also check them against the model's weights)"))
    return bad


def import_lines(source: Path, lib: AdapterLibrary, into: Path | None, overwrite: bool = False) -> list[str]:
    """An official `loradb/` opened as `lib`: each entry valid or why not; with `into`, the valid entries
    copied there unchanged (official files only: a metadata.json would change how an entry is read)."""
    lines = [f"{source}: {len(lib)} valid entries, {len(lib.skipped)} invalid"]
    for e in lib.entries:
        lines.append(f"  OK {e.name}: r={e.rank} scaling {e.scaling:g}, {len(e.modules)} modules fused"
                     + (f" ({len(e.dropped)} inert CLIP q/k/v factors dropped, as in official SemLA)"
                        if e.dropped else "")
                     + f", centroid dim {e.centroid.shape[0]}")
    lines += [f"  INVALID {n}: {r}" for n, r in lib.skipped]
    if into is not None and lib.entries:
        into.mkdir(parents=True, exist_ok=True)
        for e in lib.entries:
            dest = into / e.name
            if dest.exists():
                if not overwrite:
                    lines.append(f"  kept existing {dest} (use --overwrite)")
                    continue
                shutil.rmtree(dest)
            if e.path is None:
                raise ValueError(f"entry {e.name!r} was not opened from a directory, there is nothing to copy")
            shutil.copytree(e.path, dest)
        lines.append(f"copied {len(lib)} entries into {into} (official layout kept)")
    return lines
