"""The student: reading the corpus (continued pretraining), SFT, logit distillation, checkpoints committed by rename."""
