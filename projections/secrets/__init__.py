"""The secrets read model: current state of every secret and its retained versions."""
