"""The policies read model: policies and their bindings (inline projector, queries, projection for rebuilds)."""
