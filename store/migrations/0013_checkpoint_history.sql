-- Older engine checkpoints of each site, kept so late input can be judged (issue 17): an engine
-- restored from a checkpoint taken before a late timestamp, fed every input stored since in
-- event-time order, gives the verdicts in-order delivery would have given (ingest/rejudge.py).
-- A copy of the stored checkpoint (header and every part) is kept at most once per history
-- interval, and none older than the ingest's maximum age is needed but the newest such one.
-- `horizon`: the oldest event time an engine restored from it still judges (rules/rejudge.py).
CREATE TABLE engine_checkpoint_history (
    id        bigserial PRIMARY KEY,
    site      text NOT NULL,
    horizon   double precision NOT NULL,  -- epoch seconds
    saved_at  timestamptz NOT NULL,
    state     jsonb NOT NULL  -- the header, with replay_after
);
CREATE INDEX engine_checkpoint_history_site ON engine_checkpoint_history (site, horizon);

CREATE TABLE engine_checkpoint_history_parts (
    history_id bigint NOT NULL REFERENCES engine_checkpoint_history (id) ON DELETE CASCADE,
    part       text NOT NULL,
    state      bytea NOT NULL,
    PRIMARY KEY (history_id, part)
);

-- Late input waiting to be re-judged: set when a re-judging of its site took it (or found it
-- older than every kept copy). A restart re-judges the sites with rows still waiting, so late
-- input committed just before a crash is judged all the same.
ALTER TABLE late_readings ADD COLUMN rejudged_at timestamptz;
CREATE INDEX late_readings_waiting ON late_readings (site, ts) WHERE rejudged_at IS NULL;
