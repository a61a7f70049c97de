"""The paper's evaluation figures as small PNGs (matplotlib, Agg backend: no display needed).

- support score vs per-image mIoU (SemLA Fig. 9): is the support score a usable confidence?
- adapter contributions per target domain (Fig. 8): which adapters SemLA fused, on average.
- centroid map (Fig. 7): the library's centroids (and optionally image embeddings) in 2-D (PCA).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colours(n: int):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Rank correlation (ties get average ranks); nan with fewer than 3 points."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def support_vs_miou(records, path, method: str = "semla", title: str | None = None) -> float:
    """Scatter of per-image support score vs mIoU, one colour per domain; returns Spearman's rho."""
    plt = _pyplot()
    rows = [r for r in records if r.method == method and np.isfinite(r.support)]
    domains = list(dict.fromkeys(r.domain for r in rows))
    rho = spearman([r.support for r in rows], [r.miou for r in rows])
    fig, ax = plt.subplots(figsize=(4.8, 3.6), dpi=100)
    for d, c in zip(domains, _colours(len(domains)), strict=True):
        pts = [(r.support, r.miou * 100) for r in rows if r.domain == d]
        ax.scatter(*zip(*pts, strict=True), s=14, color=c, label=d, alpha=0.8)
    ax.set_xlabel("support score (eq. 15)")
    ax.set_ylabel("per-image mIoU (%)")
    ax.set_title(title or f"{method}: support vs mIoU (Spearman rho {rho:.2f})", fontsize=9)
    if domains:
        ax.legend(fontsize=7, ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return rho


def contributions(contrib: Mapping[str, Mapping[str, float]], path, title: str = "adapter contributions") -> None:
    """Stacked bars: for each target domain, the mean fusion weight of each adapter."""
    plt = _pyplot()
    domains = list(contrib)
    names = list(dict.fromkeys(n for d in domains for n in contrib[d]))
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
    bottom = np.zeros(len(domains))
    for name, c in zip(names, _colours(len(names)), strict=True):
        vals = np.array([contrib[d].get(name, 0.0) for d in domains])
        ax.bar(domains, vals, bottom=bottom, color=c, label=name, width=0.7)
        bottom += vals
    ax.set_ylabel("mean fusion weight")
    ax.set_xlabel("target domain")
    ax.set_ylim(0, 1.0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False, title="adapter",
              title_fontsize=7)
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def pca_2d(points: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """Projection of `points` onto the first two principal axes of `fit` (default: the points)."""
    fit = np.asarray(points if fit is None else fit, np.float64)
    mean = fit.mean(axis=0)
    if len(fit) < 2:
        return np.zeros((len(points), 2))
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:
        axes = np.vstack([axes, np.zeros_like(axes)])
    return (np.asarray(points, np.float64) - mean) @ axes.T


def centroid_map(names: Sequence[str], centroids: np.ndarray, path, samples: Mapping[str, np.ndarray] | None = None,
                 title: str = "library centroids (PCA)") -> np.ndarray:
    """Centroids as labelled stars; optional per-domain image embeddings as dots. Returns the 2-D centroids."""
    plt = _pyplot()
    samples = dict(samples or {})
    fit = np.concatenate([np.asarray(centroids)] + [np.asarray(v) for v in samples.values()]) if samples \
        else np.asarray(centroids)
    xy = pca_2d(centroids, fit)
    fig, ax = plt.subplots(figsize=(4.6, 3.8), dpi=100)
    colours = dict(zip(names, _colours(len(names)), strict=True))
    extra = iter(_colours(len(names) + len(samples))[len(names):])
    for label, emb in samples.items():
        # dots of a domain take the colour of its adapter ("fog" or "<prefix>-fog")
        match = [n for n in names if n == label or n.endswith("-" + label)]
        colour = colours[match[0]] if len(match) == 1 else next(extra)
        pts = pca_2d(emb, fit)
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.35, color=colour)
    for name, (x, y) in zip(names, xy, strict=True):
        ax.scatter([x], [y], marker="*", s=140, color=colours[name], edgecolor="k", linewidth=0.5)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return xy
