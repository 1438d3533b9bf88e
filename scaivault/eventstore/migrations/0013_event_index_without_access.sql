-- Access records are no longer indexed in scaivault_event_index: the audit log holds one row per access event with
-- the same facts, and `scaivault events list` reads them from there (projections/event_index.py).
DELETE FROM scaivault_event_index WHERE topic = 'scaivault.domain.access:AccessRecorded';
