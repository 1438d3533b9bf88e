"""Dynamic secrets: the engines, roles and leases read models (inline projector, queries, projection for rebuilds),
the lookup commands ask, and the query service."""
