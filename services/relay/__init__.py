"""The relay process: event store -> JetStream WEFT_EVENTS, in global order."""
