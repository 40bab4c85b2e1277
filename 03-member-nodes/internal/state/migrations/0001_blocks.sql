-- Every block the cluster finalized, and the fencing state that keeps a
-- stale leader from adding to it.
CREATE TABLE blocks (
    number      BIGINT PRIMARY KEY CHECK (number >= 0),
    hash        BYTEA  NOT NULL UNIQUE CHECK (length(hash) = 32),
    parent_hash BYTEA  NOT NULL CHECK (length(parent_hash) = 32),
    timestamp   BIGINT NOT NULL,
    payload     JSONB,              -- engine.Payload; NULL for genesis
    leader_id   TEXT   NOT NULL,
    epoch       BIGINT NOT NULL CHECK (epoch >= 0),
    signature   BYTEA,              -- the leader's secp256k1 signature over the block (see package signer)
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row: the newest fencing epoch any leader has written with. A commit
-- locks it, so commits are serialized and a stale epoch is refused.
CREATE TABLE fencing (
    id    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    epoch BIGINT NOT NULL DEFAULT 0
);
INSERT INTO fencing DEFAULT VALUES;
