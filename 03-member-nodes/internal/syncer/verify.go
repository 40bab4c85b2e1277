// Package syncer is the member side: it verifies each block it is offered
// against its own head before applying it to its geth and its store.
package syncer

import (
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// ErrRejected marks a block that failed verification; Reason says why in a
// word fit for a metric label.
var ErrRejected = errors.New("block rejected")

// Rejection is a verification failure.
type Rejection struct {
	Reason string // number, parent, epoch, signature, payload, cosignatures
	Detail string
}

func (r *Rejection) Error() string { return fmt.Sprintf("%s: %s: %s", ErrRejected, r.Reason, r.Detail) }
func (r *Rejection) Unwrap() error { return ErrRejected }

// Tip is what a member knows of its chain: its head and the newest epoch it
// has applied a block from.
type Tip struct {
	Number uint64
	Hash   common.Hash
	Epoch  uint64
}

// Verify checks that b can follow tip: the next number, tip as parent, an
// epoch that never goes back, a payload that matches the header, and the
// signature of an allowed leader over all of it. It returns a *Rejection.
func Verify(chainID *big.Int, v *signer.Verifier, tip Tip, b *state.Block) error {
	return verify(chainID, v, tip, b, false)
}

// VerifyProposal is Verify for a block the leader proposed before
// committing it, signed in the proposal domain: enough to execute it
// ahead, never to make it final.
func VerifyProposal(chainID *big.Int, v *signer.Verifier, tip Tip, b *state.Block) error {
	return verify(chainID, v, tip, b, true)
}

func verify(chainID *big.Int, v *signer.Verifier, tip Tip, b *state.Block, proposal bool) error {
	reject := func(reason, format string, args ...any) error {
		return &Rejection{Reason: reason, Detail: fmt.Sprintf("block %d %s: ", b.Number, b.Hash) + fmt.Sprintf(format, args...)}
	}
	switch {
	case b.Number != tip.Number+1:
		return reject("number", "does not follow our head %d", tip.Number)
	case b.ParentHash != tip.Hash:
		return reject("parent", "parent %s, our head is %s", b.ParentHash, tip.Hash)
	case b.Epoch < tip.Epoch:
		return reject("epoch", "epoch %d after a block of epoch %d: from a deposed leader", b.Epoch, tip.Epoch)
	case b.Payload == nil || b.Payload.ExecutionPayload == nil:
		return reject("payload", "no payload")
	}
	p := b.Payload.ExecutionPayload
	if p.Number != b.Number || p.BlockHash != b.Hash || p.ParentHash != b.ParentHash || p.Timestamp != b.Timestamp {
		return reject("payload", "payload is block %d %s on %s at %d", p.Number, p.BlockHash, p.ParentHash, p.Timestamp)
	}
	// The signature covers the hash; the hash covers the payload only once
	// recomputed from it: other transactions under the genuine hash and
	// signature would otherwise be stored and served.
	if hash, err := engine.ContentHash(b.Payload); err != nil {
		return reject("payload", "%v", err)
	} else if hash != b.Hash {
		return reject("payload", "its contents hash to %s", hash)
	}
	h := signer.Header{ChainID: chainID, Number: b.Number, Hash: b.Hash, ParentHash: b.ParentHash, Epoch: b.Epoch,
		Leader: b.LeaderID, Run: b.Run, Proposal: proposal}
	if _, err := v.Verify(h, b.Signature); err != nil {
		return reject("signature", "%v", err)
	}
	// k of n: a committed block needs k distinct co-signers over it (a
	// proposal gathers them: it has none yet).
	if q := v.Quorum(); q != nil && !proposal {
		c := signer.Cosign{ChainID: chainID, Number: b.Number, Hash: b.Hash, ParentHash: b.ParentHash, Epoch: b.Epoch}
		if _, err := q.Check(c, b.Cosignatures); err != nil {
			return reject("cosignatures", "%v", err)
		}
	}
	return nil
}
