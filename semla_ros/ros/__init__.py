"""The ROS 2 side: the semla_segmenter node (parameters, topics, services, threads, diagnostics, image
conversion) and the camera nodes (demo world; synthetic frames for tests and benchmarks). The math lives
below, in the engine; callbacks stay thin."""
