"""Promotion: the gate, the merge, lineage and model card, and serving the champion."""
