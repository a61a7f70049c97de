"""Benchmarks: one module per measured part, each a plain script that prints its own figures side by
side (never a timed test). `semla-bench NAME` (semla_ros/cli/bench.py) finds them here."""
