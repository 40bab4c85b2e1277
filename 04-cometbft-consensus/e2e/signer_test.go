package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	cmtlog "github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/types"
)

// A validator whose key lives with a remote signer: its home holds no key,
// config.toml sets priv_validator_laddr, and the signer (CometBFT's own
// SignerServer, in this test process, speaking the privval protocol tmkms
// and horcrux speak) dials in. Every vote and proposal is signed there, and
// the chain goes on; /status names the signer's key.
func TestRemoteSigner(t *testing.T) {
	var signerKey string
	nw := newNetwork(t, spec{validators: 1, homes: func(i int, home string) {
		signerKey = startRemoteSigner(t, home)
	}})
	v := nw.vals[0]
	nw.waitHeads(5, 60*time.Second)
	if s, ok := v.status(); !ok || s.Validator != signerKey {
		t.Fatalf("status %+v; want the remote signer's key %s", s, signerKey)
	}
	if _, err := os.Stat(filepath.Join(v.home, "config", "priv_validator_key.json")); !os.IsNotExist(err) {
		t.Fatalf("the validator's home holds a key: %v", err)
	}
}

// startRemoteSigner moves home's validator key to a signer of its own,
// points home's config.toml at a listen address for it, and starts the
// signer, which dials in until the validator listens. It returns the key's
// address.
func startRemoteSigner(t *testing.T, home string) string {
	t.Helper()
	dir := t.TempDir()
	key, state := filepath.Join(dir, "priv_validator_key.json"), filepath.Join(dir, "priv_validator_state.json")
	for from, to := range map[string]string{filepath.Join(home, "config", "priv_validator_key.json"): key,
		filepath.Join(home, "data", "priv_validator_state.json"): state} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := filepath.Join(home, "config", "config.toml")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `priv_validator_laddr = ""`) {
		t.Fatalf("%s sets no empty priv_validator_laddr to replace", conf)
	}
	b = []byte(strings.Replace(string(b), `priv_validator_laddr = ""`, fmt.Sprintf("priv_validator_laddr = %q", "tcp://"+addr), 1))
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	doc, err := types.GenesisDocFromFile(filepath.Join(home, "config", "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	pv := privval.LoadFilePV(key, state)
	endpoint := privval.NewSignerDialerEndpoint(cmtlog.NewNopLogger(), privval.DialTCPFn(addr, 3*time.Second, ed25519.GenPrivKey()),
		privval.SignerDialerEndpointRetryWaitInterval(100*time.Millisecond), privval.SignerDialerEndpointConnRetries(600))
	signer := privval.NewSignerServer(endpoint, doc.ChainID, pv)
	if err := signer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = signer.Stop() })
	return pv.GetAddress().String()
}
