"""The SemLA engine, without ROS: adapter library, navigator, retrieval, exact LoRA fusion,
shift debouncing, and the per-frame SemlaSegmenter that ties them to a CAT-Seg predictor."""
