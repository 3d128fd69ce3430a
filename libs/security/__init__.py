"""Identity and abuse control: JWTs, API keys, rate limits, approval-link tokens."""
