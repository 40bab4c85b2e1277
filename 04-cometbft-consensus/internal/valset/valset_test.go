package valset

import (
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cometbft/cometbft/privval"
	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/google/uuid"
)

// A key is read as base64, hex or from a CometBFT home, and anything else
// is refused naming what is wanted.
func TestParseKey(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, "config"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	pv := privval.GenFilePV(filepath.Join(home, "config", "priv_validator_key.json"), filepath.Join(home, "data", "priv_validator_state.json"))
	pv.Save()
	pub, err := pv.GetPubKey()
	if err != nil {
		t.Fatal(err)
	}
	var want [32]byte
	copy(want[:], pub.Bytes())
	for _, in := range []string{home, base64.StdEncoding.EncodeToString(pub.Bytes()), hex.EncodeToString(pub.Bytes()), "0x" + hex.EncodeToString(pub.Bytes())} {
		got, err := ParseKey(in)
		if err != nil || got != want {
			t.Errorf("ParseKey(%q) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "abc", base64.StdEncoding.EncodeToString(make([]byte, 33)), t.TempDir()} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

// The signer comes from a hex key file or a keystore and its password;
// none, both, a wrong password or a bad file are refused.
func TestLoadSigner(t *testing.T) {
	dir := t.TempDir()
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("0x"+hex.EncodeToString(crypto.FromECDSA(key))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ks, err := keystore.EncryptKey(&keystore.Key{Id: uuid.New(), Address: crypto.PubkeyToAddress(key.PublicKey), PrivateKey: key}, "pw", keystore.LightScryptN, keystore.LightScryptP)
	if err != nil {
		t.Fatal(err)
	}
	ksFile, pwFile, badPw := filepath.Join(dir, "ks.json"), filepath.Join(dir, "pw"), filepath.Join(dir, "bad")
	for f, b := range map[string][]byte{ksFile: ks, pwFile: []byte("pw\n"), badPw: []byte("nope")} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ keyFile, ks, pw string }{{keyFile, "", ""}, {"", ksFile, pwFile}} {
		got, err := LoadSigner(c.keyFile, c.ks, c.pw)
		if err != nil || !got.Equal(key) {
			t.Errorf("LoadSigner(%q, %q, %q): %v", c.keyFile, c.ks, c.pw, err)
		}
	}
	for _, c := range []struct{ keyFile, ks, pw, want string }{
		{"", "", "", "no signing key"},
		{keyFile, ksFile, pwFile, "give one"},
		{"", ksFile, badPw, "--keystore"},
		{pwFile, "", "", "hex private key"},
	} {
		if _, err := LoadSigner(c.keyFile, c.ks, c.pw); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadSigner(%q, %q, %q) = %v, want an error saying %q", c.keyFile, c.ks, c.pw, err, c.want)
		}
	}
}
