"""The audit log: a hash-chained projection of AccessRecorded events, and its queries."""
