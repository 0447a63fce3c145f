"""Sequence-level distillation: teacher inputs from prompt templates, filters and dedup of the pairs,
SFT sets."""
