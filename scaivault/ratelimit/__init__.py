"""Rate limiting: a token bucket per (identity, category), in Redis or in-process (docs/rate-limiting.md)."""

from scaivault.ratelimit.limiter import RateLimiter, RedisState

__all__ = ["RateLimiter", "RedisState"]
