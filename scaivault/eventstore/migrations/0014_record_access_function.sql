-- A batch of access records in one statement, hence one round trip and one implicit transaction: the shared
-- read-model swap lock, the last-access times the records imply, then the append itself. A group commit used to
-- spend five round trips (BEGIN, lock, touch, append, COMMIT) on this, which dominated its cost at small batches.
-- Last-access times, written by the group commit (below), by write commands and by a rebuild alike: a secret's
-- row moves only forward. Unqualified, so a rebuild's search_path points it at the copy being built.
CREATE OR REPLACE FUNCTION scaivault_touch_last_access(touched uuid[], touched_at timestamptz[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO scaivault_secret_last_access (stream_id, last_accessed_at)
    SELECT * FROM unnest(touched, touched_at)
    ON CONFLICT (stream_id) DO UPDATE SET last_accessed_at = excluded.last_accessed_at
        WHERE scaivault_secret_last_access.last_accessed_at < excluded.last_accessed_at;
$$;

CREATE OR REPLACE FUNCTION scaivault_record_access(
    swap_key bigint, touched uuid[], touched_at timestamptz[],
    events_table regclass, channel text, lock_timeout text,
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(swap_key);
    IF cardinality(touched) > 0 THEN
        PERFORM scaivault_touch_last_access(touched, touched_at);
    END IF;
    PERFORM scaivault_append_events(events_table, channel, lock_timeout, ids, versions, topics, states);
END
$$;
