"""Models on disk and in memory, below the stages that train and score them: named bases, a checkpoint's
roles and files, the device and precision a model computes in, and loading each into (model, tokenizer)."""
