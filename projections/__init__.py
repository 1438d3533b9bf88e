"""The read side: projectors that build read models from events, and the queries that read them."""
