"""The demo node's debounce settings (node parameters): what `semla-demo` starts the node with, and what
the offline tools replay on the demo world (`semla-relabel --demo`, the gap demo). Relative threshold:
a fraction of the library's median inter-centroid distance."""
from __future__ import annotations

DEMO_NODE_SETTINGS = {
    "top_k": 3,
    "temperature": 0.05,
    "ema_alpha": 0.3,
    "switch_threshold": 0.5,
    "threshold_mode": "relative",
    "min_consecutive": 4,
    "cooldown_s": 3.0,
    "warmup_frames": 5,  # the startup reference is an average, not one noisy frame
}
