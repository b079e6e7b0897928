"""Validation metric callbacks; scoring functions importable on their own."""
