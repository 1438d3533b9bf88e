"""Operators' work on the read side: rebuilding and verifying read models, and audit retention (which removes old
entries and their access events from the log)."""
