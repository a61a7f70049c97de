"""The demo node's retrieval and debounce settings (node parameters): what `semla-demo` and demo.launch.py
start the node with, and what the offline tools replay on the demo world (`semla-relabel --demo`, the gap
demo)."""
from __future__ import annotations

DEMO_NODE_SETTINGS = {
    # The node's own shift defaults (the evidence trigger, measured on the demo world's shift scenarios,
    # docs/shifts.md) and a top-3 fusion from the 7-adapter library. The former EMA / hits / cooldown
    # overrides were tuned for the distance trigger and are not needed now.
    "top_k": 3,
    "temperature": 0.05,
}
