package node

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/notify"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// notify announces the leader's head on Redis pub/sub once geth made it
// final, with the block inside when it is small. A lost notice costs a
// member a poll interval, never a block.
func (a *App) notify(ctx context.Context) {
	if a.head.Number <= a.notified {
		return
	}
	a.notified = a.head.Number
	n := notify.Notice{Number: a.head.Number, Hash: a.head.Hash, Epoch: a.headEpoch, Leader: a.opts.ID}
	if b := a.committed; b != nil && b.Hash == a.head.Hash {
		if body, err := json.Marshal(state.NewBlockJSON(b)); err == nil && len(body) <= notify.MaxInline {
			n.Block = body
		}
	}
	if _, err := notify.Publish(ctx, a.rdb, notify.Channel(a.opts.Cluster), n); err != nil {
		a.metrics.Errors.WithLabelValues("redis").Inc()
		a.log.Debug("block notice not sent", "number", n.Number, "err", err)
	}
}

// propose announces a block this leader built and is about to execute and
// commit, so that followers execute it while it does (see preExecute). It
// is signed in the proposal domain: followers check it came from an
// allowed leader before executing it, and its signature cannot pass for a
// committed block's. It does not wait for Redis: a lost or late proposal
// only costs a follower its head start.
func (a *App) propose(ctx context.Context, p *engine.Payload) {
	lease, ok := a.currentLease()
	if !ok {
		return
	}
	d := p.ExecutionPayload
	b := &state.Block{Number: d.Number, Hash: d.BlockHash, ParentHash: d.ParentHash, Timestamp: d.Timestamp, Payload: p,
		LeaderID: a.opts.ID, Run: a.run, Epoch: lease.Epoch}
	a.tasks.Go(func() {
		sig, err := a.opts.Signer.Sign(signer.Header{ChainID: a.opts.ChainID, Number: b.Number, Hash: b.Hash,
			ParentHash: b.ParentHash, Epoch: b.Epoch, Leader: b.LeaderID, Run: b.Run, Proposal: true})
		if err != nil {
			a.log.Warn("block proposal not signed", "number", b.Number, "err", err)
			return
		}
		b.Signature = sig
		body, err := json.Marshal(state.NewBlockJSON(b))
		if err != nil {
			a.log.Warn("block proposal not encoded", "number", b.Number, "err", err)
			return
		}
		a.lastProposal.Store(&proposal{hash: b.Hash, body: body})
		n := notify.Notice{Number: b.Number, Hash: b.Hash, Epoch: b.Epoch, Leader: a.opts.ID, Proposed: true}
		if len(body) <= notify.MaxInline {
			n.Block = body
		} else {
			// Too big for Redis: co-signers fetch it (GET /proposals/{hash}).
			a.log.Debug("block proposal announced without its body", "number", b.Number, "bytes", len(body))
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := notify.Publish(ctx, a.rdb, notify.Channel(a.opts.Cluster), n); err != nil {
			a.log.Debug("block proposal not sent", "number", n.Number, "err", err)
		}
	})
}

// proposal is the block this leader proposed last, encoded, for
// GET /proposals/{hash}.
type proposal struct {
	hash common.Hash
	body []byte
}

// Proposal returns the last proposed block if it has this hash.
func (a *App) Proposal(hash common.Hash) ([]byte, bool) {
	p := a.lastProposal.Load()
	if p == nil || p.hash != hash {
		return nil, false
	}
	return p.body, true
}

// How long a node's directory entry lives, and how often it is refreshed.
const (
	registerTTL   = 5 * time.Second
	registerEvery = time.Second
)

// register keeps this node's API URL in the node directory, where members
// look the leader's up. While another process announces itself under this
// node's id, the node is not ready and a candidate stays out of the
// election (keepLease): two processes with one id are one too many.
func (a *App) register(ctx context.Context) {
	t := time.NewTicker(registerEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.announce(ctx)
	}
}

// announce refreshes this node's directory entry once. Run calls it before
// it starts the election, so that a duplicate is known as one before it
// could take a free lease.
func (a *App) announce(ctx context.Context) {
	err := election.Announce(ctx, a.rdb, a.opts.Cluster, a.opts.ID, a.run, a.opts.APIURL, registerTTL)
	switch {
	case errors.Is(err, election.ErrIDInUse):
		a.setIDErr(err)
	case err == nil:
		a.setIDErr(nil)
	case ctx.Err() == nil:
		a.log.Debug("directory entry not refreshed", "err", err)
	}
}

// setIDErr records whether another process holds this node's id; the log
// says so once per change.
func (a *App) setIDErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	a.mu.Lock()
	changed := msg != a.idErr
	a.idErr = msg
	a.mu.Unlock()
	switch {
	case changed && err != nil:
		a.log.Warn("another process announces this --instance-id (a duplicate, or this node's previous run until its entry expires): standing by",
			"err", err, "expires_within", registerTTL)
	case changed:
		a.log.Info("the instance id is ours again")
	}
}

func (a *App) idInUse() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.idErr != ""
}

// watchNotices listens for block notices and wakes the follower. go-redis
// re-subscribes after a lost connection; a failed first subscription is
// retried here.
func (a *App) watchNotices(ctx context.Context) {
	backoff := newBackoff(100*time.Millisecond, 2*time.Second)
	for ctx.Err() == nil {
		notices, err := notify.Subscribe[notify.Notice](ctx, a.rdb, notify.Channel(a.opts.Cluster), func(payload string, err error) {
			a.log.Warn("malformed block notice dropped", "payload", payload, "err", err)
		})
		if err != nil {
			if !sleep(ctx, backoff.take()) {
				return
			}
			continue
		}
		backoff.reset()
		for n := range notices {
			if n.Proposed {
				var b state.BlockJSON
				switch {
				case len(n.Block) > 0 && json.Unmarshal(n.Block, &b) == nil:
					a.proposed.Store(b.Block())
					signal(a.proposal)
				case len(n.Block) == 0 && a.cosigning() && n.Leader != a.opts.ID:
					// Only a co-signer needs a big proposal before it is
					// committed: the leader waits for its signature.
					a.tasks.Go(func() { a.fetchProposal(ctx, n) })
				}
				continue
			}
			if n.Number > a.announced.Load() {
				a.announced.Store(n.Number)
			}
			a.setLeader(n.Leader, n.Epoch)
			if len(n.Block) > 0 {
				var b state.BlockJSON
				if err := json.Unmarshal(n.Block, &b); err != nil {
					a.log.Warn("malformed block in a notice: fetching instead", "number", n.Number, "err", err)
				} else {
					a.inline.Store(b.Block())
				}
			}
			signal(a.news)
		}
	}
}

// signal wakes the reader of ch unless a wake-up is already pending.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
