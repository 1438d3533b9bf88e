"""Webhooks: the read model (inline projector, queries, projection for rebuilds), the query service, and the sink
that turns the fan-out's public events into deliveries."""
