"""The SemLA benchmark protocol on folder datasets, without ROS: metrics, the dataset format, the
evaluated methods (every fusion made by the node's own segmenter), reports and figures, and the scoring
of shift detection on a replayed stream (shifts.py). The CLI
`semla-eval` (semla_ros/cli/evaluate.py) is a thin wrapper around these modules."""
