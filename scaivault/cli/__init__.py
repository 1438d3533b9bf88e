"""The ``scaivault`` command: serve, and the operator commands that share the server's configuration."""
