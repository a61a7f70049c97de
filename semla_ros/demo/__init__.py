"""The built-in demo: a procedural multi-domain world, its asset build (small CAT-Seg + LoRA
library) and a demo camera node."""
