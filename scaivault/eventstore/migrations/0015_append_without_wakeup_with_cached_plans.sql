-- The append, cheaper for the group commit of access records:
-- * It may leave out the wake-up (an empty channel). The group commit does, when it woke the projection runners
--   less than half a second ago: a NOTIFY per batch costs PostgreSQL about as much CPU as the batch's commit, and
--   a runner that was woken keeps polling for a while anyway (projections/runner.py), so it misses nothing.
-- * The event store's own table gets statements PL/pgSQL plans once per connection (EXECUTE format(...) would parse
--   and plan the lock and the insert on every append). Other tables (tests) keep that path.
CREATE OR REPLACE FUNCTION scaivault_append_events(
    events_table regclass, channel text, lock_timeout text,
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    IF events_table = 'scaivault_events'::regclass THEN
        LOCK TABLE scaivault_events IN EXCLUSIVE MODE;
    ELSE
        EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', events_table);
    END IF;
    IF channel <> '' THEN
        PERFORM pg_notify(channel, '');
    END IF;
    IF events_table = 'scaivault_events'::regclass THEN
        RETURN QUERY INSERT INTO scaivault_events (originator_id, originator_version, topic, state)
            SELECT * FROM unnest(ids, versions, topics, states) RETURNING notification_id;
    ELSE
        RETURN QUERY EXECUTE format(
            'INSERT INTO %s (originator_id, originator_version, topic, state)
             SELECT * FROM unnest($1, $2, $3, $4) RETURNING notification_id', events_table)
        USING ids, versions, topics, states;
    END IF;
END
$$;
