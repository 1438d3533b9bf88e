"""Audit export jobs' read model: the inline projector, its queries, the reader the API lists and shows exports
with, and the lookups the export commands make. Every query a caller can reach is confined to one tenant."""
