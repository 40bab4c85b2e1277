// Package signer signs blocks with a leader's secp256k1 key and verifies them
// against the configured leader addresses: members apply only what an allowed
// leader signed.
//
// The signature covers a digest of the chain id, the block number, hash and
// parent hash, and the leader's fencing epoch, so a signature can be replayed
// neither on another chain, nor at another height, nor in another epoch.
package signer

import (
	"crypto/ecdsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"slices"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// ErrBadSignature means a block's signature is malformed or not from an
// allowed leader.
var ErrBadSignature = errors.New("bad block signature")

// Header is what a signature commits to.
type Header struct {
	ChainID    *big.Int
	Number     uint64
	Hash       common.Hash
	ParentHash common.Hash
	Epoch      uint64
	Leader     string // the leader id the block is stored and served with
	Run        string // the run id of the leader's process
	// Proposal marks a block the leader announces before committing it.
	// It is signed in another domain, so that a proposal's signature can
	// never pass for a committed block's.
	Proposal bool
}

// Domains separate these signatures from any other use of the same key,
// and proposals from committed blocks.
var (
	domain         = []byte("geth-consensus/block/v3")
	proposalDomain = []byte("geth-consensus/proposal/v3")
)

// Digest is keccak256(domain || chainID (32 bytes) || number || hash ||
// parent || epoch || len(leader) || leader || len(run) || run): every field
// a member stores but its own commit time (the hash covers the payload and
// timestamp).
func (h Header) Digest() common.Hash {
	d := domain
	if h.Proposal {
		d = proposalDomain
	}
	buf := append([]byte{}, d...)
	buf = append(buf, common.BigToHash(h.ChainID).Bytes()...)
	buf = binary.BigEndian.AppendUint64(buf, h.Number)
	buf = append(buf, h.Hash.Bytes()...)
	buf = append(buf, h.ParentHash.Bytes()...)
	buf = binary.BigEndian.AppendUint64(buf, h.Epoch)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(h.Leader)))
	buf = append(buf, h.Leader...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(h.Run)))
	buf = append(buf, h.Run...)
	return crypto.Keccak256Hash(buf)
}

// Signer signs blocks with one key.
type Signer struct {
	key     *ecdsa.PrivateKey
	Address common.Address
}

// LoadKey reads a private key given as hex (with or without 0x) or as the
// path of a file holding it; errors name the source, never the key.
func LoadKey(value string) (*Signer, error) {
	text, source := strings.TrimSpace(value), "--signer-key"
	if _, err := crypto.HexToECDSA(trimHex(text)); err != nil {
		b, ferr := os.ReadFile(value)
		if ferr != nil {
			var pathErr *fs.PathError
			if errors.As(ferr, &pathErr) {
				ferr = pathErr.Err // the path is the value: a malformed key is nearly the key
			}
			if strings.ContainsAny(value, `/\.`) {
				return nil, fmt.Errorf("signer key: file %q: %w", value, ferr)
			}
			return nil, fmt.Errorf("signer key: the value (%d characters, not shown) is neither a hex private key nor a readable file: %w", len(value), ferr)
		}
		text, source = strings.TrimSpace(string(b)), "file "+value
	}
	key, err := crypto.HexToECDSA(trimHex(text))
	if err != nil {
		return nil, fmt.Errorf("signer key in %s: %w", source, err)
	}
	return &Signer{key: key, Address: crypto.PubkeyToAddress(key.PublicKey)}, nil
}

// LoadKeystore decrypts an encrypted key file in geth's keystore format
// (`geth account new`, `cast wallet import`) with the password held in
// passwordFile (a trailing newline is not part of it). Errors name the
// files, never the password or the key.
func LoadKeystore(path, passwordFile string) (*Signer, error) {
	encrypted, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signer keystore: %w", err)
	}
	password, err := os.ReadFile(passwordFile)
	if err != nil {
		return nil, fmt.Errorf("signer password file: %w", err)
	}
	key, err := keystore.DecryptKey(encrypted, strings.TrimRight(string(password), "\r\n"))
	if err != nil {
		return nil, fmt.Errorf("signer keystore %s with the password in %s: %w", path, passwordFile, err)
	}
	return &Signer{key: key.PrivateKey, Address: key.Address}, nil
}

func trimHex(s string) string { return strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X") }

// Sign returns the 65-byte recoverable signature of h.
func (s *Signer) Sign(h Header) ([]byte, error) {
	return crypto.Sign(h.Digest().Bytes(), s.key)
}

// Verifier checks signatures against the allowed leader addresses, and
// committed blocks' co-signatures against the quorum, if there is one.
type Verifier struct {
	allowed []common.Address
	quorum  *Quorum
}

// WithQuorum returns v requiring q's co-signatures on committed blocks.
func (v *Verifier) WithQuorum(q *Quorum) *Verifier {
	w := *v
	w.quorum = q
	return &w
}

// Quorum is the co-signer quorum committed blocks need; nil for none
// (--threshold 1).
func (v *Verifier) Quorum() *Quorum { return v.quorum }

// NewVerifier accepts signatures from these addresses only.
func NewVerifier(allowed []common.Address) (*Verifier, error) {
	if len(allowed) == 0 {
		return nil, errors.New("no allowed leader addresses: members would accept nothing")
	}
	return &Verifier{allowed: slices.Clone(allowed)}, nil
}

// Verify returns the signer of h, or ErrBadSignature with the reason.
func (v *Verifier) Verify(h Header, sig []byte) (common.Address, error) {
	if len(sig) != crypto.SignatureLength {
		return common.Address{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadSignature, len(sig), crypto.SignatureLength)
	}
	pub, err := crypto.SigToPub(h.Digest().Bytes(), sig)
	if err != nil {
		return common.Address{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	addr := crypto.PubkeyToAddress(*pub)
	if !slices.Contains(v.allowed, addr) {
		return addr, fmt.Errorf("%w: signed by %s, not an allowed leader", ErrBadSignature, addr)
	}
	return addr, nil
}
