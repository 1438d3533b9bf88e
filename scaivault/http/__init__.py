"""The aiohttp front end: translates /v1 calls into commands and queries."""
