"""Audit exports in the background: read a tenant's audit log in pages, write JSONL or CSV part files of at most
``records_per_file`` records, and put them (and a manifest.json) on the destination.

- ``worker.py``: the job runner (polling, locks, attempts, the manifest);
- ``formats.py``: JSONL and CSV encoding, part files;
- ``destinations.py``: the local export directory and S3 (through the egress guard, pinned to the checked address);
- ``credentials.py``: S3 credentials, read on the requester's behalf with its rights as they are when the job runs;
- ``errors.py``: ``ExportFailed``, whose message is shown on the export.
"""
