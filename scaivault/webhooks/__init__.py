"""The sending side of webhooks: signing (``signing.py``), the egress-guarded HTTP client (``client.py``), the outbox
worker that delivers what the fan-out queued (``dispatcher.py``) and the API's test sends and redeliveries
(``service.py``). docs/webhooks.md describes the whole."""
