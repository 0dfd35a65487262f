"""The training stage: plan and train LoRA variants (issue #4, not built yet)."""
