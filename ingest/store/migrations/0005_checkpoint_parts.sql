-- Engine checkpoints in parts (engine format 3): engine_checkpoints keeps the small header (clocks,
-- reorder buffer, pending events) and this table one row per device or space part, so a
-- checkpoint rewrites only the parts changed since the previous one instead of the whole engine.
-- Checkpoints of the earlier whole-engine format are not understood by the new engine, which
-- starts fresh once (a half-elapsed duration then restarts; nothing stored is lost).
CREATE TABLE engine_checkpoint_parts (
    site  text COLLATE "C" NOT NULL,
    part  text COLLATE "C" NOT NULL,
    state jsonb NOT NULL,
    PRIMARY KEY (site, part)
);
