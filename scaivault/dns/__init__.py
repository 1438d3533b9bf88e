"""DNS provider clients: one module per provider behind one port (``port.py: DnsRecords``), what ACME DNS-01
challenges write their ``_acme-challenge`` TXT records through (docs/dns-providers.md)."""
