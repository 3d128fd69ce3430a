"""Shared plumbing of every Weft service: message schemas, event store, relay, bus, settings, logging."""
