"""The SemLA engine, without ROS: settings and their defaults, the adapter library, navigators,
retrieval, exact LoRA fusion staging, shift triggers and debouncing, and the per-frame SemlaSegmenter that ties
them to a CAT-Seg predictor."""
