"""Auth: API keys (hashed), scopes, per-key limits."""
