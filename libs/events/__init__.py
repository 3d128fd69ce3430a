"""The event-sourcing kernel: message schemas, event store, bus, consumers, timers, migrations, settings, logging."""
