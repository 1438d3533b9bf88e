"""Rotation and expiry scheduling inside the server (docs/rotation.md)."""
