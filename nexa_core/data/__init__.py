"""Raw text in: documents from the raw folders, quarantined rows, sentence and quality checks."""
