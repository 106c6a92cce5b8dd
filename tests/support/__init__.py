"""Helpers shared by rtml's tests (imported as `support`)."""
