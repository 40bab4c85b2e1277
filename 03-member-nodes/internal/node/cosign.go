package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/notify"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// k-of-n co-signed blocks (--cosigners, --threshold above 1).
//
// The leader proposes each block as it always does (leader.go, propose).
// Every node holding a listed key executes the proposal on its own geth
// (preExecute: newPayload VALID, on its committed head), records in its
// store that it signs this block at this height and epoch, and only then
// sends its signature to the leader over Redis. The leader commits the
// block with k distinct co-signatures, its own among them if its key is
// listed, and members accept a block only with them (syncer.Verify).
//
// A co-signer signs one block per height and epoch, whatever restarts come
// between (state.RecordCosign): two blocks at one height can both gather k
// signatures only in two epochs, and the cluster store's fencing lets one
// of them in. A leader that gathers fewer than k within CosignTimeout
// gives the block up and releases its lease (noQuorum), and a new epoch
// lets the co-signers sign a new block at that height.

// errNoQuorum: the leader did not gather k co-signatures in time.
var errNoQuorum = errors.New("no co-signature quorum")

// cosigning reports whether this node co-signs blocks: k-of-n is on and
// its key is listed.
func (a *App) cosigning() bool {
	q := a.opts.Quorum
	return q != nil && a.opts.Signer != nil && q.Listed(a.opts.Signer.Address)
}

func (a *App) cosignOf(b *state.Block) signer.Cosign {
	return signer.Cosign{ChainID: a.opts.ChainID, Number: b.Number, Hash: b.Hash, ParentHash: b.ParentHash, Epoch: b.Epoch}
}

// promise records, durably, that this node signs b, and signs it. It
// refuses a second block at b's height and epoch (state.ErrSignedOther).
func (a *App) promise(ctx context.Context, b *state.Block) ([]byte, error) {
	if err := a.state.RecordCosign(ctx, a.opts.Signer.Address, b.Number, b.Epoch, b.Hash); err != nil {
		return nil, err
	}
	return a.opts.Signer.Cosign(a.cosignOf(b))
}

// cosign signs a proposed block this node executed on its committed head
// and sends the signature to the leader.
func (a *App) cosign(ctx context.Context, b *state.Block) {
	sig, err := a.promise(ctx, b)
	if errors.Is(err, state.ErrSignedOther) {
		a.metrics.Cosignatures.WithLabelValues("refused").Inc()
		a.log.Warn("not co-signing: this key signed another block at this height and epoch", "number", b.Number, "hash", b.Hash, "epoch", b.Epoch, "err", err)
		return
	}
	if err != nil {
		a.metrics.Cosignatures.WithLabelValues("failed").Inc()
		a.log.Warn("not co-signing", "number", b.Number, "err", err)
		return
	}
	m := notify.Cosignature{Number: b.Number, Hash: b.Hash, Epoch: b.Epoch, Signer: a.opts.Signer.Address, Signature: sig}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := notify.Publish(ctx, a.rdb, notify.CosignChannel(a.opts.Cluster), m); err != nil {
		a.metrics.Cosignatures.WithLabelValues("failed").Inc()
		a.log.Warn("co-signature not sent", "number", b.Number, "err", err)
		return
	}
	a.metrics.Cosignatures.WithLabelValues("signed").Inc()
	a.log.Debug("co-signed", "number", b.Number, "hash", b.Hash, "epoch", b.Epoch)
}

// watchCosignatures hands the co-signatures sent on Redis to the leader's
// gatherCosignatures, which keeps those of the block it waits for.
func (a *App) watchCosignatures(ctx context.Context) {
	backoff := newBackoff(100*time.Millisecond, 2*time.Second)
	for ctx.Err() == nil {
		sigs, err := notify.Subscribe[notify.Cosignature](ctx, a.rdb, notify.CosignChannel(a.opts.Cluster), func(payload string, err error) {
			a.log.Warn("malformed co-signature dropped", "payload", payload, "err", err)
		})
		if err != nil {
			if !sleep(ctx, backoff.take()) {
				return
			}
			continue
		}
		backoff.reset()
		for m := range sigs {
			// The newest count: the leader may be about to gather them
			// (a co-signer can answer before the leader's own newPayload
			// returns). When it is not gathering, stale ones pile up: the
			// oldest make room.
			for {
				select {
				case a.cosigs <- m:
				default:
					select {
					case <-a.cosigs:
					default:
					}
					continue
				}
				break
			}
		}
	}
}

// gatherCosignatures returns k co-signatures of blk: this node's own if
// its key is listed, and those the co-signers send within CosignTimeout.
// Only signatures that recover to a listed co-signer over blk count, once
// per co-signer.
func (a *App) gatherCosignatures(ctx context.Context, blk *state.Block) ([][]byte, error) {
	q := a.opts.Quorum
	c := a.cosignOf(blk)
	var sigs [][]byte
	var signers []common.Address
	add := func(sig []byte) {
		if addr, err := q.Signer(c, sig); err == nil && !slices.Contains(signers, addr) {
			signers, sigs = append(signers, addr), append(sigs, sig)
		}
	}
	if a.cosigning() {
		sig, err := a.promise(ctx, blk)
		switch {
		case errors.Is(err, state.ErrSignedOther):
			return nil, fmt.Errorf("%w: sign block %d: %w", errNoQuorum, blk.Number, err)
		case err != nil:
			a.metrics.Errors.WithLabelValues("store").Inc()
			return nil, fmt.Errorf("%w: record this node's co-signature: %v", errUnavailable, err)
		}
		add(sig)
	}
	start := a.opts.Now()
	timeout := time.NewTimer(a.opts.CosignTimeout)
	defer timeout.Stop()
	for len(sigs) < q.Threshold() {
		select {
		case m := <-a.cosigs:
			if m.Number == blk.Number && m.Hash == blk.Hash && m.Epoch == blk.Epoch {
				add(m.Signature)
			}
		case <-timeout.C:
			return nil, fmt.Errorf("%w: block %d: %d of %d co-signatures within %s (from %v)",
				errNoQuorum, blk.Number, len(sigs), q.Threshold(), a.opts.CosignTimeout, signers)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	a.metrics.CosignWait.Observe(a.opts.Now().Sub(start).Seconds())
	return sigs, nil
}

// noQuorum handles a block the leader could not gather k co-signatures
// for: it is not committed and the node says why on /readyz. The node
// releases its lease, so that another candidate (and a new epoch) can try,
// as soon as its own key cannot sign the next attempt at this height, or
// after StandDown without a quorum when its key is not listed.
func (a *App) noQuorum(err error) error {
	now := a.opts.Now()
	if a.quorumLost.IsZero() {
		a.quorumLost = now
	}
	if errors.Is(err, state.ErrSignedOther) {
		// This leader signed another block at this height in this epoch:
		// only a new epoch may propose another. /readyz keeps the reason
		// the first block failed for.
		a.log.Warn("no co-signature quorum for this height in this epoch: releasing the lease", "err", err)
		a.quorumLost = time.Time{}
		a.releaseLease()
		return errRoleChange
	}
	a.setQuorumErr(err)
	if a.opts.StandDown > 0 && now.Sub(a.quorumLost) >= a.opts.StandDown {
		a.log.Warn("no co-signature quorum: releasing the lease", "for", now.Sub(a.quorumLost).Round(time.Millisecond), "err", err)
		a.quorumLost = time.Time{}
		a.releaseLease()
		return errRoleChange
	}
	return fmt.Errorf("%w: %w", errUnavailable, err)
}

// setQuorumErr records why this node's blocks were not final (nil: blocks
// are final again), for its /readyz: a candidate that tried to lead says so
// until it applies or commits a block, leading or not. Members and
// candidates that never tried stay ready; the leader's /readyz and
// gethcl_errors_total{kind="quorum"} tell the cluster's state.
func (a *App) setQuorumErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	a.mu.Lock()
	changed := msg != a.quorumErr
	a.quorumErr = msg
	a.mu.Unlock()
	switch {
	case changed && err != nil:
		a.log.Warn("blocks are not final: too few co-signatures", "err", err)
	case changed:
		a.log.Info("co-signature quorum back")
	}
}

// fetchProposal gets a proposal too big to ride in its notice from the
// leader's API, for this co-signer to execute and sign. One fetch runs at a
// time (a notice names any leader it likes), and a late answer never
// replaces a newer proposal.
func (a *App) fetchProposal(ctx context.Context, n notify.Notice) {
	if !a.fetching.CompareAndSwap(false, true) {
		return
	}
	defer a.fetching.Store(false)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := a.proposals.Proposal(ctx, n.Leader, n.Hash)
	if err != nil {
		a.log.Warn("proposed block not fetched: not co-signing it", "number", n.Number, "leader", n.Leader, "err", err)
		return
	}
	if cur := a.proposed.Load(); cur != nil && cur.Number > b.Number {
		return
	}
	a.proposed.Store(b)
	signal(a.proposal)
}
