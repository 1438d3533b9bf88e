"""The partners and tenants read model (inline projector, queries, the lookup commands ask, and the cached tenant
directory callers are resolved with)."""
