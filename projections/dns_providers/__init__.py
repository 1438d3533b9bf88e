"""DNS providers: the read model (inline projector, queries, projection for rebuilds), the lookup commands ask, and
the query service."""
