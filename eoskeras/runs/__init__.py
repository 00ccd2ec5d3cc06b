"""Run directories and running recipes (no heavy imports here)."""
