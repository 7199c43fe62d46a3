"""The studio: the web app of `progan serve` (see app.py)."""
