"""The models a checkpoint is scored beside, all answering the same prompts. On the lowest floor: requests,
settings, training and evaluation all name them.

student: the checkpoint; read: the model SFT started from, after reading the domain (only when it differs from the
base); base: the off-the-shelf model the user started from, before reading and before SFT. A student built from a
config has no off-the-shelf form (random weights are not a model): its base is the model after reading, and it has
no separate read row. A distilled student (nexa_core.train.kd) has two more: teacher: the checkpoint it was pruned
from and learnt from; pruned_sft: the same pruned copy trained by SFT alone, what distillation must beat."""

CHECKPOINT_ROLES = ("student", "read", "base")
ROLES = (*CHECKPOINT_ROLES, "teacher", "pruned_sft")
