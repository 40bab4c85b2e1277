package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/notify"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// keepLease runs the election for a leader candidate: every LeaseRenew it
// renews the lease it holds, or tries to take a free one with an epoch above
// every epoch the cluster store has seen (Redis may have restarted empty).
// When Redis cannot be reached the lease is not renewed, and the local
// deadline ends production before the lease can have expired in Redis.
func (a *App) keepLease(ctx context.Context) {
	t := time.NewTicker(a.opts.LeaseRenew)
	defer t.Stop()
	for {
		if lease, held := a.heldLease(); held {
			start := time.Now()
			renewed, err := a.elector.Renew(ctx, lease)
			switch {
			case errors.Is(err, election.ErrLost):
				a.log.Warn("lease lost", "epoch", lease.Epoch)
				a.dropLease()
			case err != nil:
				if ctx.Err() == nil {
					a.setElectionErr(err)
					a.metrics.Errors.WithLabelValues("redis").Inc()
					a.log.Debug("lease renewal failed: producing until the local deadline", "err", err,
						"deadline_in", time.Until(lease.Deadline).Round(time.Millisecond))
				}
			default:
				a.metrics.LeaseRenew.Observe(time.Since(start).Seconds())
				a.setElectionErr(nil)
				a.setLease(renewed)
			}
		} else if floor, err := a.state.FencedEpoch(ctx); err != nil {
			// Without the store there is nothing to lead: do not take the lease.
			if ctx.Err() == nil {
				a.setElectionErr(fmt.Errorf("cluster store: %w", err))
			}
		} else if l, ok, err := a.elector.TryAcquire(ctx, floor); err != nil {
			if ctx.Err() == nil {
				a.setElectionErr(err)
				a.metrics.Errors.WithLabelValues("redis").Inc()
			}
		} else {
			a.setElectionErr(nil)
			if ok {
				a.log.Info("lease acquired", "epoch", l.Epoch)
				a.setLease(l)
			} else {
				a.setLeader(l.Holder, l.Epoch)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leading reports whether this node holds a lease whose local deadline has
// not passed.
func (a *App) leading() bool {
	_, ok := a.currentLease()
	return ok
}

// currentLease returns the lease if it is held and still valid now.
func (a *App) currentLease() (election.Lease, bool) {
	l, held := a.heldLease()
	return l, held && l.Valid(time.Now())
}

func (a *App) heldLease() (election.Lease, bool) {
	a.leaseMu.Lock()
	defer a.leaseMu.Unlock()
	return a.lease, a.held
}

func (a *App) setLease(l election.Lease) {
	a.leaseMu.Lock()
	changed := !a.held
	a.lease, a.held = l, true
	// The producer re-checks the deadline before every block; wake it when
	// the deadline passes without a renewal, too.
	if a.deadline == nil {
		a.deadline = time.AfterFunc(time.Until(l.Deadline), a.signalRoleChange)
	} else {
		a.deadline.Reset(time.Until(l.Deadline))
	}
	a.leaseMu.Unlock()
	a.setLeader(a.opts.ID, l.Epoch)
	a.metrics.Leader.Set(1)
	if changed {
		a.signalRoleChange()
	}
}

// dropLease forgets the lease (lost, or refused by the store). It stays in
// Redis until its TTL ends, which is what a deposed leader should wait for.
func (a *App) dropLease() {
	a.leaseMu.Lock()
	changed := a.held
	a.held = false
	a.leaseMu.Unlock()
	a.metrics.Leader.Set(0)
	if changed {
		a.signalRoleChange()
	}
}

// releaseLease gives the lease up on shutdown, so the next leader need not
// wait for the TTL.
func (a *App) releaseLease() {
	l, held := a.heldLease()
	if !held {
		return
	}
	a.dropLease()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.elector.Release(ctx, l); err != nil {
		a.log.Warn("lease not released: the next leader waits for its TTL", "err", err)
		return
	}
	a.log.Info("lease released", "epoch", l.Epoch)
}

func (a *App) signalRoleChange() {
	select {
	case a.roleChange <- struct{}{}:
	default:
	}
}

// setElectionErr records why this candidate cannot take part in the
// election (nil: it can), for /readyz and the log: once per change.
func (a *App) setElectionErr(err error) {
	msg := ""
	if err != nil {
		msg = "election: " + err.Error()
	}
	a.mu.Lock()
	changed := msg != a.electionErr
	a.electionErr = msg
	a.mu.Unlock()
	if changed && err != nil {
		a.log.Warn("cannot take part in the election", "err", err)
	} else if changed {
		a.log.Info("back in the election")
	}
}

func (a *App) setLeader(id string, epoch uint64) {
	a.metrics.Epoch.Set(float64(epoch))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status.Leader, a.status.Epoch = id, epoch
}

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
	if _, err := notify.Publish(ctx, a.rdb, notify.Channel(redisPrefix), n); err != nil {
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
		LeaderID: a.opts.ID, Epoch: lease.Epoch}
	a.tasks.Go(func() {
		sig, err := a.opts.Signer.Sign(signer.Header{ChainID: a.opts.ChainID, Number: b.Number, Hash: b.Hash,
			ParentHash: b.ParentHash, Epoch: b.Epoch, Proposal: true})
		if err != nil {
			a.log.Warn("block proposal not signed", "number", b.Number, "err", err)
			return
		}
		b.Signature = sig
		body, err := json.Marshal(state.NewBlockJSON(b))
		if err != nil || len(body) > notify.MaxInline {
			a.log.Debug("block proposal not sent: too large to carry inline", "number", b.Number, "bytes", len(body), "err", err)
			return
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		n := notify.Notice{Number: b.Number, Hash: b.Hash, Epoch: b.Epoch, Leader: a.opts.ID, Block: body, Proposed: true}
		if _, err := notify.Publish(ctx, a.rdb, notify.Channel(redisPrefix), n); err != nil {
			a.log.Debug("block proposal not sent", "number", n.Number, "err", err)
		}
	})
}

// How long a node's directory entry lives, and how often it is refreshed.
const (
	registerTTL   = 5 * time.Second
	registerEvery = time.Second
)

// register keeps this node's API URL in the node directory, where members
// look the leader's up.
func (a *App) register(ctx context.Context) {
	t := time.NewTicker(registerEvery)
	defer t.Stop()
	for {
		if err := election.Announce(ctx, a.rdb, redisPrefix, a.opts.ID, a.opts.APIURL, registerTTL); err != nil && ctx.Err() == nil {
			a.log.Debug("directory entry not refreshed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchNotices listens for block notices and wakes the follower. go-redis
// re-subscribes after a lost connection; a failed first subscription is
// retried here.
func (a *App) watchNotices(ctx context.Context) {
	backoff := newBackoff(100*time.Millisecond, 2*time.Second)
	for ctx.Err() == nil {
		notices, err := notify.Subscribe(ctx, a.rdb, notify.Channel(redisPrefix), func(payload string, err error) {
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
				if len(n.Block) > 0 && json.Unmarshal(n.Block, &b) == nil {
					a.proposed.Store(b.Block())
					signal(a.proposal)
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
