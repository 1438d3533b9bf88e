"""How an export job fails."""

from __future__ import annotations


class ExportFailed(Exception):
    """The export cannot complete. ``str()`` is recorded on the export, where anyone allowed to see the tenant's
    exports reads it: it never holds a credential, nor the host, address or a field value of a secret."""
