"""taskgate: gateway/memory."""
