"""The ACME read models: accounts, orders, http-01 tokens (docs/acme.md)."""
