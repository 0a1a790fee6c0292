"""LLM calls (SPEC §10): usage, cost, budgets, safe streams."""
