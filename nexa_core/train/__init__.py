"""The student: named bases, reading the corpus (continued pretraining), SFT, checkpoints committed by rename."""
