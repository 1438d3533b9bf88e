"""The write side: command handlers, each one use case, each run as one transaction."""
