-- k-of-n co-signed blocks (--cosigners, --threshold): each block's
-- co-signatures, and what this store's co-signers signed, one block per
-- height and epoch. A co-signer records its signature here, committed,
-- before it hands it out: a restart cannot make it sign a second block at
-- a height and epoch it signed once.
ALTER TABLE blocks ADD COLUMN cosignatures BYTEA[];

CREATE TABLE cosigned (
    signer    BYTEA NOT NULL,
    number    BIGINT NOT NULL,
    epoch     BIGINT NOT NULL,
    hash      BYTEA NOT NULL,
    signed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (signer, number, epoch)
);
