-- Signed anchors of the ledger's tip (issue 18): what the scheduler exported to the anchor
-- folder, also kept here for convenience. Verification trusts the files and the public key,
-- never this table (whoever can rewrite the ledger could rewrite it too). Append-only, like
-- the ledger.
CREATE TABLE ledger_anchors (
    id         bigserial PRIMARY KEY,
    seq        bigint NOT NULL,        -- the ledger entry anchored (0: the ledger was empty)
    hash       text NOT NULL,          -- its hash
    at         timestamptz NOT NULL,   -- when it was signed
    key_id     text NOT NULL,          -- the signing key (alerts/anchors.py key_id)
    signature  text NOT NULL,          -- Ed25519, base64, over the anchor's canonical JSON
    file       text NOT NULL           -- the file's name in the anchor folder
);
CREATE INDEX ledger_anchors_seq ON ledger_anchors (seq DESC);

CREATE TRIGGER ledger_anchors_append_only BEFORE UPDATE OR DELETE ON ledger_anchors
    FOR EACH ROW EXECUTE FUNCTION cw_ledger_append_only();
CREATE TRIGGER ledger_anchors_no_truncate BEFORE TRUNCATE ON ledger_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION cw_ledger_append_only();
