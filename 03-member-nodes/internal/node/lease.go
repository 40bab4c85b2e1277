package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
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

func (a *App) heldLease() (election.Lease, bool) { return a.lease.get() }

func (a *App) setLease(l election.Lease) {
	changed := a.lease.set(l, a.signalRoleChange)
	a.setLeader(a.opts.ID, l.Epoch)
	a.metrics.Leader.Set(1)
	if changed {
		a.signalRoleChange()
	}
}

// dropLease forgets the lease (lost, or refused by the store). It stays in
// Redis until its TTL ends, which is what a deposed leader should wait for.
func (a *App) dropLease() {
	changed := a.lease.drop()
	a.metrics.Leader.Set(0)
	if changed {
		a.signalRoleChange()
	}
}

// leaseHold is the lease a candidate holds, if any, with the timer that
// wakes the producer when its local deadline passes without a renewal
// (the producer re-checks the deadline before every block).
type leaseHold struct {
	mu       sync.Mutex
	lease    election.Lease
	held     bool
	deadline *time.Timer
}

func (h *leaseHold) get() (election.Lease, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lease, h.held
}

// set holds l, calling expired when its deadline passes; it reports whether
// the lease was not held before.
func (h *leaseHold) set(l election.Lease, expired func()) (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed = !h.held
	h.lease, h.held = l, true
	if h.deadline == nil {
		h.deadline = time.AfterFunc(time.Until(l.Deadline), expired)
	} else {
		h.deadline.Reset(time.Until(l.Deadline))
	}
	return changed
}

// drop forgets the lease; it reports whether it was held.
func (h *leaseHold) drop() (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed = h.held
	h.held = false
	return changed
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
