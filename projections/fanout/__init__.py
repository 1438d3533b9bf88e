"""The event fan-out: public events derived from the log (the feed), and the outbox rows and queues that take them
to webhooks and subscriptions."""
