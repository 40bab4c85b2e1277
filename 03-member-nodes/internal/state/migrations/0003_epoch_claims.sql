-- Who holds each fencing epoch. A leader claims its epoch here (Fence, or
-- its first Commit) before it writes, and the database refuses a second
-- claimant: the lease's epoch counter lives in Redis, which may restart
-- empty and hand one epoch out twice, and two processes may be started with
-- one instance id. A claim names the leader's instance id and the run id
-- its process drew at start, and so does every block.
CREATE TABLE epochs (
    epoch      BIGINT PRIMARY KEY CHECK (epoch > 0),
    leader_id  TEXT NOT NULL,
    run        TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE blocks ADD COLUMN run TEXT NOT NULL DEFAULT '';

-- Blocks stored before claims existed: their epoch belongs to their leader
-- and to no run, so no process can claim it again.
INSERT INTO epochs (epoch, leader_id, run)
    SELECT epoch, min(leader_id), '' FROM blocks WHERE number > 0 GROUP BY epoch;
INSERT INTO epochs (epoch, leader_id, run)
    SELECT epoch, '', '' FROM fencing WHERE epoch > 0 ON CONFLICT (epoch) DO NOTHING;
