-- A polling subscription's dropped entries counted per path (docs/subscriptions.md, "Counts a subscriber is
-- shown"): its owner, unless it administers the tenant, is told only of drops of entries it may list, judged by
-- its policies when it asks, so the fan-out (which knows nothing of the owner's token) keeps the count per path and
-- the reader sums the paths the caller may list. Entries without a path are counted only in
-- scaivault_subscription_queue_state (the total, which administrators see). Written by the fan-out's sink in the
-- statement that drops the entries; goes with the subscription's queue. Drops before this migration are in the
-- total only.
CREATE TABLE IF NOT EXISTS scaivault_subscription_drops (
    subscription_id text COLLATE "C" NOT NULL,
    path text COLLATE "C" NOT NULL,
    dropped_events bigint NOT NULL,
    last_dropped_at timestamptz NOT NULL,
    PRIMARY KEY (subscription_id, path)
);
