"""The training stage: plan and train a population of LoRA variants of one base (GRPO via TRL + PEFT)."""
