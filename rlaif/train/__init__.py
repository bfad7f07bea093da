"""Training: one GRPO + LoRA run of a recipe (run.py), its callbacks, and its checkpoints."""
