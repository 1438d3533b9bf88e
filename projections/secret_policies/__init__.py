"""The secret policies read model: value-generation recipes (inline projector, queries, lookup, query service)."""
