"""The `weft` command: above everything it imports (libs, services, deploy)."""
