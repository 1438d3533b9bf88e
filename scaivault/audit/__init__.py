"""Access records: every request, allowed or denied, leaves one, durably, before its response."""
