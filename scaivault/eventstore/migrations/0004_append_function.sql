-- Appending events in one round trip. The table lock is held from here to COMMIT, and every round trip it spans
-- (waiting on a busy client event loop) stalls all writers, so the lock, the wake-up and the insert travel as one
-- call. The lock is what makes insert order equal commit order (readers tailing notification_id never skip).
CREATE OR REPLACE FUNCTION scaivault_append_events(
    events_table regclass, channel text, lock_timeout text,
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', events_table);
    PERFORM pg_notify(channel, '');
    RETURN QUERY EXECUTE format(
        'INSERT INTO %s (originator_id, originator_version, topic, state)
         SELECT * FROM unnest($1, $2, $3, $4) RETURNING notification_id', events_table)
    USING ids, versions, topics, states;
END
$$;
