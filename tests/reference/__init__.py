"""Naive per-parameter references, written from GitHub-only sources, for the parity tests."""
