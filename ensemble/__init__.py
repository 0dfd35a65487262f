"""ensemble: measure the collective intelligence of LoRA populations."""

__version__ = "0.1.0"
