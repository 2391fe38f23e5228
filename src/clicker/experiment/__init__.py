"""Experiments: compare runs at equal world-token budgets, with few-seed statistics and plots."""
