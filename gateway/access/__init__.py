"""Who may call the gateway, as which tenant, and how often: API keys and rate limits.

Keys are stored only as salted hashes (in the config, in a keys file the `taskgate keys`
command manages, or in Redis); the key itself is shown once, when it is made.
"""
