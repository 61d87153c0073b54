"""Experts: the specialists taskgate dispatches to (OpenAI-compatible servers, tools, models)."""
