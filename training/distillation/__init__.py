"""Cross-modal distillation: the loss (loss.py, `DistillationLoss`) and its parts (regions, features, outputs,
adaptive weights, config). The command that trains with it is training/distill.py (`tinybev distill`)."""
