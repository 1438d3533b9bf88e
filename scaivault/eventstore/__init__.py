"""The PostgreSQL event store: asyncpg recorder with eventsourcing's table shape, mapper, snapshots, migrations."""
