package signer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// ErrQuorum means a block lacks the co-signatures --threshold asks for.
var ErrQuorum = errors.New("not enough co-signatures")

// Cosign is what a co-signer signs (--cosigners, --threshold above 1): one
// block at one height in one epoch. A co-signer signs at most one block per
// height and epoch, so two blocks at a height can both gather k signatures
// only in different epochs, and the cluster store fences all but one.
type Cosign struct {
	ChainID    *big.Int
	Number     uint64
	Hash       common.Hash
	ParentHash common.Hash
	Epoch      uint64
}

var cosignDomain = []byte("geth-consensus/cosign/v1")

// Digest is keccak256(domain || chainID (32 bytes) || number || hash ||
// parent || epoch).
func (c Cosign) Digest() common.Hash {
	buf := append([]byte{}, cosignDomain...)
	buf = append(buf, common.BigToHash(c.ChainID).Bytes()...)
	buf = binary.BigEndian.AppendUint64(buf, c.Number)
	buf = append(buf, c.Hash.Bytes()...)
	buf = append(buf, c.ParentHash.Bytes()...)
	buf = binary.BigEndian.AppendUint64(buf, c.Epoch)
	return crypto.Keccak256Hash(buf)
}

// Cosign returns this key's 65-byte signature of c.
func (s *Signer) Cosign(c Cosign) ([]byte, error) {
	return crypto.Sign(c.Digest().Bytes(), s.key)
}

// Quorum is the co-signer set and how many of them make a block final.
type Quorum struct {
	signers []common.Address
	k       int
}

// NewQuorum checks the set: k between 1 and the number of distinct
// signers, no zero address.
func NewQuorum(signers []common.Address, k int) (*Quorum, error) {
	for i, a := range signers {
		if a == (common.Address{}) {
			return nil, errors.New("co-signer list: the zero address")
		}
		if slices.Contains(signers[:i], a) {
			return nil, fmt.Errorf("co-signer list: %s twice", a)
		}
	}
	if k < 1 || k > len(signers) {
		return nil, fmt.Errorf("threshold %d of %d co-signers: want 1 to %d", k, len(signers), len(signers))
	}
	return &Quorum{signers: slices.Clone(signers), k: k}, nil
}

// Threshold is k.
func (q *Quorum) Threshold() int { return q.k }

// Size is n.
func (q *Quorum) Size() int { return len(q.signers) }

// Listed reports whether addr is a co-signer.
func (q *Quorum) Listed(addr common.Address) bool { return slices.Contains(q.signers, addr) }

// Signer recovers who signed c with sig, and fails unless it is a listed
// co-signer.
func (q *Quorum) Signer(c Cosign, sig []byte) (common.Address, error) {
	if len(sig) != crypto.SignatureLength {
		return common.Address{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadSignature, len(sig), crypto.SignatureLength)
	}
	pub, err := crypto.SigToPub(c.Digest().Bytes(), sig)
	if err != nil {
		return common.Address{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	addr := crypto.PubkeyToAddress(*pub)
	if !q.Listed(addr) {
		return addr, fmt.Errorf("%w: %s is not a listed co-signer (or signed another block)", ErrBadSignature, addr)
	}
	return addr, nil
}

// Check returns the distinct listed co-signers of c among sigs, and
// ErrQuorum, naming every signature it could not count, when they are
// fewer than k. A signature over another digest recovers to an address
// nobody holds, so it counts as unlisted.
func (q *Quorum) Check(c Cosign, sigs [][]byte) ([]common.Address, error) {
	var signers []common.Address
	var bad []string
	for i, sig := range sigs {
		addr, err := q.Signer(c, sig)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("#%d: %v", i, err))
		case slices.Contains(signers, addr):
			bad = append(bad, fmt.Sprintf("#%d: %s signed twice", i, addr))
		default:
			signers = append(signers, addr)
		}
	}
	if len(signers) < q.k {
		detail := ""
		if len(bad) > 0 {
			detail = " (" + strings.Join(bad, "; ") + ")"
		}
		return signers, fmt.Errorf("%w: %d valid of %d needed%s", ErrQuorum, len(signers), q.k, detail)
	}
	return signers, nil
}
