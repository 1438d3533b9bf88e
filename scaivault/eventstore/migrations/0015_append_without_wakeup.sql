-- An append may leave out the wake-up (an empty channel). The group commit of access records does, when it woke the
-- projection runners less than half a second ago: a NOTIFY per batch cost PostgreSQL about as much CPU as the
-- batch's commit (measured: ~140 us per transaction with one listener), and a runner that was woken keeps polling
-- for a while anyway (projections/runner.py), so it misses nothing.
CREATE OR REPLACE FUNCTION scaivault_append_events(
    events_table regclass, channel text, lock_timeout text,
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', events_table);
    IF channel <> '' THEN
        PERFORM pg_notify(channel, '');
    END IF;
    RETURN QUERY EXECUTE format(
        'INSERT INTO %s (originator_id, originator_version, topic, state)
         SELECT * FROM unnest($1, $2, $3, $4) RETURNING notification_id', events_table)
    USING ids, versions, topics, states;
END
$$;
