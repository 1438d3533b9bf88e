"""Subscriptions: the read model (inline projector, queries, reader), the fan-out sink that queues or pushes public
events for them, and the queue that polling subscribers long-poll and acknowledge."""
