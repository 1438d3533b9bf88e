"""The domain model: aggregates, events, value objects. No I/O happens here."""
