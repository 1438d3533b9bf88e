"""What the quotas count (``scaivault/domain/quotas.py``), read from other areas' inline read models."""
