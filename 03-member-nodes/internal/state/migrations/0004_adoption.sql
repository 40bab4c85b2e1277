-- A chain adopted from a single node (--adopt-chain): the block it runs
-- through, recorded once, before the first adopted block is committed, so
-- that an interrupted import is resumed by the next leader and a finished
-- one is never started again.
CREATE TABLE adoption (
    id         BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    through    BIGINT NOT NULL CHECK (through > 0),
    started_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
