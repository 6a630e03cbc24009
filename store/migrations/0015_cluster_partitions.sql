-- Issue 23: the cluster mode (`clausewatch run --broker nats://...`). Sites are dealt to a fixed
-- number of partitions by a hash of the site id (ingest/nats.py); a worker owns a partition
-- while it holds the partition's advisory lock, and every flush commits its rows together with
-- the partition's stream position, only while the partition's epoch is still the one the
-- worker took it at (store/cluster.py). A takeover bumps the epoch, so a stalled old owner's
-- commit fails instead of writing after the new owner.
CREATE TABLE cluster_partitions (
    partition    integer PRIMARY KEY CHECK (partition >= 0 AND partition < 4096),
    owner        text,  -- the worker holding it (store.cluster.worker_id), NULL when released
    epoch        bigint NOT NULL DEFAULT 0,
    -- The last sequence of the NATS stream `$MQTT_msgs` committed for this partition: the
    -- next owner consumes from the one after it.
    stream_seq   bigint NOT NULL DEFAULT 0,
    claimed_at   timestamptz,
    committed_at timestamptz
);

-- Workers say they are alive here (every heartbeat), so the others know how many partitions
-- each should own; ownership itself is the advisory lock, which a dead worker's connection loses.
-- `backend_pid`: the server process of the worker's lease connection; gone, the worker is dead
-- at once, before its heartbeat ages.
CREATE TABLE cluster_workers (
    owner        text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    backend_pid  integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
