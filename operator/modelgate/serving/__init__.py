"""Serving a release's model: input validation and a hash-checked loader."""
