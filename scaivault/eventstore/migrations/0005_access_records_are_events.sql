-- Access records are AccessRecorded events in scaivault_events now (the audit log is their projection).
DROP TABLE IF EXISTS scaivault_access_records;
