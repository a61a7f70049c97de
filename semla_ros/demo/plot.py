"""The demo's picture: a timeline (shift detection, support, mIoU) and a strip of frames per domain.

Why one picture: it shows at a glance that swaps happen where the camera's domain changes and
nowhere else, and that the adapted masks are better than the unadapted ones there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .world import colorize

_DOMAIN_COLOURS = {"clear": "#fff3b0", "dusk": "#f6c28b", "night": "#b9b9d9", "fog": "#dddddd",
                   "rain": "#a9cce3", "snow": "#eef6fb", "tunnel": "#e0b98a"}


def _seconds(stamp) -> float:
    return stamp[0] + stamp[1] * 1e-9


def plot_demo(path: Path, rec, frames, per_frame, swaps, rows, sequence, t0: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    domains = [r.domain for r in rows]
    n_cols = max(len(domains), 1)
    fig = plt.figure(figsize=(max(12.0, 2.2 * n_cols), 13.5))
    gs = GridSpec(7, n_cols, figure=fig, height_ratios=[1.3, 0.8, 1.0, 1, 1, 1, 1], hspace=0.6)
    ax_d = fig.add_subplot(gs[0, :])
    ax_s = fig.add_subplot(gs[1, :], sharex=ax_d)
    ax_m = fig.add_subplot(gs[2, :], sharex=ax_d)

    # Domain segments as shaded spans (from the camera's frame log).
    by_index = sorted(frames, key=lambda f: f["index"])
    spans = []
    for f in by_index:
        t = _seconds((f["sec"], f["nanosec"])) - t0
        if not spans or spans[-1][0] != f["domain"]:
            spans.append([f["domain"], t, t])
        spans[-1][2] = t + 1.0 / sequence.rate_hz
    for ax in (ax_d, ax_s, ax_m):
        for d, a, b in spans:
            ax.axvspan(a, b, color=_DOMAIN_COLOURS.get(d, "#eeeeee"), alpha=0.6, lw=0)
        for s in swaps:
            ax.axvline(s["t"], color="crimson", lw=1.2, ls="--")
    for d, a, b in spans:
        ax_d.text((a + b) / 2, 1.02, d, transform=ax_d.get_xaxis_transform(), ha="center", va="bottom", fontsize=9)

    sup = sorted(rec.support.items())
    ts = np.array([_seconds(s) - t0 for s, _ in sup])
    vals = np.array([v for _, v in sup], dtype=np.float64) if sup else np.zeros((0, 8))
    if len(ts):
        ax_d.plot(ts, vals[:, 1], color="navy", lw=1.2, label="EMA distance to active reference")
        if np.isfinite(vals[:, 2]).any():
            ax_d.plot(ts, vals[:, 2], color="darkorange", lw=1.2, ls=":", label="switch threshold (trigger: distance)")
        wrong = vals[:, 7] == 0
        ax_d.plot(ts[wrong], np.zeros(wrong.sum()), "|", color="crimson", ms=6,
                  label="active fusion's top-1 is not this frame's top-1")
        ax_s.plot(ts, vals[:, 5], color="teal", lw=1.0, label="library support, scale-free (eq. 15 x median spacing)")
        ax_s.plot(ts, vals[:, 6], color="purple", lw=1.0, label="active fusion's support, scale-free")
    for s in swaps:
        top = s["adapters"][0].replace("demo-", "") if s["adapters"] else "?"
        ax_d.annotate(f"{s['reason']}: {top} {s['weights'][0]:.2f}" if s["weights"] else s["reason"],
                      xy=(s["t"], 0.97), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                      ha="right", va="top", color="crimson")
    ax_d.set_ylabel("distance")
    ax_d.legend(loc="upper left", fontsize=7, framealpha=0.8)
    ax_d.set_title("SemLA demo: domain-shift detection and adapter swaps "
                   "(dashed red = swap; x = seconds since the first frame)", fontsize=11, pad=18)
    ax_s.set_ylabel("support")
    ax_s.legend(loc="upper left", fontsize=7, framealpha=0.8)

    if per_frame:
        t = np.array([_seconds(p["stamp"]) - t0 for p in per_frame])
        a = np.array([p["adapted"] for p in per_frame])
        u = np.array([p["unadapted"] for p in per_frame])
        k = 5
        smooth = lambda x: np.convolve(x, np.ones(k) / k, mode="same") if len(x) >= k else x  # noqa: E731
        ax_m.plot(t, smooth(a), color="green", lw=1.3, label="adapted node (published masks)")
        ax_m.plot(t, smooth(u), color="gray", lw=1.3, label="same model, no adaptation")
    ax_m.set_ylabel("frame mIoU")
    ax_m.set_ylim(0, 1)
    ax_m.legend(loc="lower left", fontsize=7, framealpha=0.8)

    # Strip: one column per domain, a frame from the end of its last segment (adapted by then).
    for col, d in enumerate(domains):
        candidates = [p for p in per_frame if p["domain"] == d]
        pick = candidates[int(len(candidates) * 0.85)] if candidates else None
        row_titles = ("input", "adapted mask", "no adaptation", "ground truth")
        for row, title in enumerate(row_titles):
            ax = fig.add_subplot(gs[3 + row, col])
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(title, fontsize=9)
            if pick is None:
                continue
            s = pick["stamp"]
            img = (rec.images[s], colorize(rec.masks[s]), colorize(pick["base_mask"]), colorize(rec.truths[s]))[row]
            ax.imshow(img, interpolation="nearest")
            if row == 0:
                r = next(r for r in rows if r.domain == d)
                ax.set_title(f"{d}\nmIoU {r.adapted_miou:.2f} vs {r.unadapted_miou:.2f}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
