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
// deadline ends production before the lease can have expired in Redis. A
// node that has failed to produce for StandDown (geth down or syncing, the
// store unreachable) releases its lease, and takes none until it has
// reconciled again.
func (a *App) keepLease(ctx context.Context) {
	t := time.NewTicker(a.opts.LeaseRenew)
	defer t.Stop()
	for {
		failing, cause := a.health.sinceErr()
		standDown := a.opts.StandDown > 0 && !failing.IsZero() && time.Since(failing) > a.opts.StandDown
		if a.idInUse() {
			// Another process announces this id (register): it may hold the
			// lease under it; never compete with it.
			a.releaseLease()
		} else if lease, held := a.heldLease(); held && standDown {
			// The lease follows health: a healthy candidate takes over
			// rather than wait for a lease this node renews in vain.
			a.log.Warn("cannot produce: releasing the lease", "epoch", lease.Epoch,
				"for", time.Since(failing).Round(time.Millisecond), "err", cause)
			a.releaseLease()
		} else if standDown {
			a.setElectionErr(fmt.Errorf("not taking the lease: cannot produce: %v", cause))
		} else if lease, held := a.heldLease(); held {
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

// health records since when this node's Run loop fails (geth down or
// syncing, the store unreachable): the lease follows it (keepLease).
type health struct {
	mu    sync.Mutex
	since time.Time // zero: healthy
	cause error
}

// failing records err, a fault since at, keeping the start of the failing
// spell.
func (h *health) failing(err error, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.since.IsZero() {
		h.since = at
	}
	h.cause = err
}

// ok ends a failing spell: the node reconciled with geth and the store.
func (h *health) ok() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.since, h.cause = time.Time{}, nil
}

func (h *health) sinceErr() (time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since, h.cause
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
