"""Adapters to the outside: mail, the guarded outbound HTTP client, webhook endpoints and signing."""
