"""taskgate: gateway/api."""
