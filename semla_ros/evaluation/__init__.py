"""Evaluation and adapter-library tooling: the SemLA benchmark protocol on folder datasets.

Plain Python (no ROS): metrics, the dataset format, the evaluated methods, LoRA training,
RecycleLoRA-style initialisation and the figures. The CLIs in `semla_ros.cli.evaluate` and
`semla_ros.cli.library` are thin wrappers around these modules.
"""
