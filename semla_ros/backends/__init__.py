"""How the CAT-Seg network runs (PyTorch, ONNX Runtime, TensorRT) behind one Backend interface; the predictor keeps
pre/post-processing and the PyTorch weights, a backend only replaces the network call."""
