package signer

import (
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

const leaderKey = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

func TestSignAndVerify(t *testing.T) {
	leader, err := LoadKey("0x" + leaderKey)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := crypto.GenerateKey()
	intruder := &Signer{key: other, Address: crypto.PubkeyToAddress(other.PublicKey)}
	v, err := NewVerifier([]common.Address{leader.Address})
	if err != nil {
		t.Fatal(err)
	}
	h := Header{ChainID: big.NewInt(1337), Number: 7, Hash: common.HexToHash("0xaa"), ParentHash: common.HexToHash("0xbb"), Epoch: 3}
	sig, err := leader.Sign(h)
	if err != nil {
		t.Fatal(err)
	}
	if addr, err := v.Verify(h, sig); err != nil || addr != leader.Address {
		t.Fatalf("valid signature: %s %v", addr, err)
	}
	// The same signature on anything else fails, field by field.
	for name, changed := range map[string]Header{
		"chain":  {ChainID: big.NewInt(1), Number: 7, Hash: h.Hash, ParentHash: h.ParentHash, Epoch: 3},
		"number": {ChainID: h.ChainID, Number: 8, Hash: h.Hash, ParentHash: h.ParentHash, Epoch: 3},
		"hash":   {ChainID: h.ChainID, Number: 7, Hash: common.HexToHash("0xab"), ParentHash: h.ParentHash, Epoch: 3},
		"parent": {ChainID: h.ChainID, Number: 7, Hash: h.Hash, ParentHash: common.HexToHash("0xbc"), Epoch: 3},
		"epoch":  {ChainID: h.ChainID, Number: 7, Hash: h.Hash, ParentHash: h.ParentHash, Epoch: 4},
	} {
		if _, err := v.Verify(changed, sig); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	bad, _ := intruder.Sign(h)
	if _, err := v.Verify(h, bad); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "not an allowed leader") {
		t.Errorf("intruder: %v", err)
	}
	for _, garbage := range [][]byte{nil, sig[:64], append(append([]byte{}, sig[:64]...), 9)} {
		if _, err := v.Verify(h, garbage); !errors.Is(err, ErrBadSignature) {
			t.Errorf("garbage %x: %v", garbage, err)
		}
	}
}

func TestLoadKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leader.key")
	if err := os.WriteFile(file, []byte(leaderKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{leaderKey, "0x" + leaderKey, "0X" + leaderKey, file} {
		if s, err := LoadKey(ok); err != nil || s.Address != common.HexToAddress("0x70997970C51812dc3A010C7d01b50e0d17dc79C8") {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"0x1234", leaderKey[:63], "0x" + leaderKey[:63], `"` + leaderKey + `"`, leaderKey + "zz", filepath.Join(t.TempDir(), "missing")} {
		_, err := LoadKey(bad)
		if err == nil || strings.Contains(err.Error(), leaderKey[4:60]) {
			t.Errorf("%q: %v (must fail without showing the key)", bad, err)
		}
	}
	if _, err := NewVerifier(nil); err == nil {
		t.Error("empty allow list accepted")
	}
}

// A proposal's signature is in another domain: it never verifies as a
// committed block's, nor the other way round.
func TestProposalSignaturesAreSeparate(t *testing.T) {
	s, err := LoadKey("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier([]common.Address{s.Address})
	if err != nil {
		t.Fatal(err)
	}
	block := Header{ChainID: big.NewInt(1337), Number: 7, Hash: common.Hash{7}, ParentHash: common.Hash{6}, Epoch: 2}
	proposal := block
	proposal.Proposal = true
	for _, c := range []struct{ signed, checked Header }{{block, proposal}, {proposal, block}} {
		sig, err := s.Sign(c.signed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(c.signed, sig); err != nil {
			t.Fatalf("own signature refused: %v", err)
		}
		if _, err := v.Verify(c.checked, sig); err == nil {
			t.Fatalf("signature of proposal=%v accepted for proposal=%v", c.signed.Proposal, c.checked.Proposal)
		}
	}
}

// A geth keystore file and its password file give the key; a wrong
// password is refused without showing it.
func TestLoadKeystore(t *testing.T) {
	dir := t.TempDir()
	key, err := crypto.HexToECDSA(leaderKey)
	if err != nil {
		t.Fatal(err)
	}
	const password = "correct horse battery staple"
	encrypted, err := keystore.EncryptKey(&keystore.Key{Address: crypto.PubkeyToAddress(key.PublicKey), PrivateKey: key},
		password, 2, 1) // scrypt N and p lowered for the test; geth's are 262144 and 1
	if err != nil {
		t.Fatal(err)
	}
	ks, good, bad := filepath.Join(dir, "key.json"), filepath.Join(dir, "password"), filepath.Join(dir, "wrong")
	for path, content := range map[string][]byte{ks: encrypted, good: []byte(password + "\n"), bad: []byte("guess\n")} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := LoadKeystore(ks, good)
	if err != nil || s.Address != common.HexToAddress("0x70997970C51812dc3A010C7d01b50e0d17dc79C8") {
		t.Fatalf("keystore: %v, %v", s, err)
	}
	_, err = LoadKeystore(ks, bad)
	if err == nil || strings.Contains(err.Error(), "guess") || strings.Contains(err.Error(), leaderKey[4:60]) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := LoadKeystore(ks, filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing password file accepted")
	}
}
