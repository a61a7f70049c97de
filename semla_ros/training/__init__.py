"""Training, without ROS: the one training loop (a CAT-Seg base model or LoRA adapters on it), PEFT
LoRA adapters written as library entries, and their initialisations (standard, RRQR)."""
