"""Test doubles that are real servers (used by the tests, benchmarks and jobs under test)."""
