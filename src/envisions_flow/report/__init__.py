"""The report: the paper's tables and figures rebuilt from the configured runs, beside the published numbers."""
