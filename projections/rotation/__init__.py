"""The rotation read models: rotation policies, per-secret rotation and expiry schedules, rotation history."""
