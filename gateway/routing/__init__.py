"""taskgate: gateway/routing."""
