"""The studio: `progan video`, `progan export` and the web app of `progan serve` (see app.py)."""
