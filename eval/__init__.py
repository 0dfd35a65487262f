"""The answering stage: collect every variant's answers (vLLM multi-LoRA or HF + PEFT), extract and grade them."""
