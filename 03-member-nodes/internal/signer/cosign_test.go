package signer

import (
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

func newSigner(t *testing.T) *Signer {
	t.Helper()
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{key: key, Address: crypto.PubkeyToAddress(key.PublicKey)}
}

func TestQuorum(t *testing.T) {
	a, b, c, outsider := newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	q, err := NewQuorum([]common.Address{a.Address, b.Address, c.Address}, 2)
	if err != nil {
		t.Fatal(err)
	}
	block := Cosign{ChainID: big.NewInt(1337), Number: 7, Hash: common.Hash{7}, ParentHash: common.Hash{6}, Epoch: 3}
	sign := func(s *Signer, c Cosign) []byte {
		sig, err := s.Cosign(c)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	other := block
	other.Epoch = 4
	for _, tc := range []struct {
		name string
		sigs [][]byte
		want int    // valid distinct signers
		err  string // "" when the quorum holds
	}{
		{"two of three", [][]byte{sign(a, block), sign(c, block)}, 2, ""},
		{"all three", [][]byte{sign(a, block), sign(b, block), sign(c, block)}, 3, ""},
		{"one", [][]byte{sign(a, block)}, 1, "1 valid of 2 needed"},
		{"one twice", [][]byte{sign(a, block), sign(a, block)}, 1, "signed twice"},
		{"an unlisted key", [][]byte{sign(a, block), sign(outsider, block)}, 1, "is not a listed co-signer"},
		{"another epoch's digest", [][]byte{sign(a, block), sign(b, other)}, 1, "is not a listed co-signer"},
		{"truncated", [][]byte{sign(a, block), sign(b, block)[:64]}, 1, "64 bytes, want 65"},
		{"none", nil, 0, "0 valid of 2 needed"},
	} {
		signers, err := q.Check(block, tc.sigs)
		if len(signers) != tc.want {
			t.Errorf("%s: %d signers, want %d", tc.name, len(signers), tc.want)
		}
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (!errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want ErrQuorum with %q", tc.name, err, tc.err)
		}
	}
}

func TestNewQuorumRefusesBadSets(t *testing.T) {
	a, b := newSigner(t).Address, newSigner(t).Address
	for _, tc := range []struct {
		signers []common.Address
		k       int
		want    string
	}{
		{[]common.Address{a, b}, 3, "threshold 3 of 2 co-signers: want 1 to 2"},
		{[]common.Address{a, b}, 0, "threshold 0 of 2"},
		{[]common.Address{a, a}, 1, "twice"},
		{[]common.Address{a, {}}, 1, "the zero address"},
	} {
		if _, err := NewQuorum(tc.signers, tc.k); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewQuorum(%v, %d) = %v, want %q", tc.signers, tc.k, err, tc.want)
		}
	}
}
