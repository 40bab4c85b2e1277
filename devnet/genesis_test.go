package devnet

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/params/forks"
)

// genesis.json is what every stage and test runs on: check it with geth's
// own types.
func TestGenesis(t *testing.T) {
	path, err := FindUp("genesis.json")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g core.Genesis
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("geth cannot parse genesis.json: %v", err)
	}
	cfg := g.Config
	if cfg.ChainID.Uint64() != 1337 {
		t.Errorf("chain id %d, want 1337", cfg.ChainID)
	}
	if err := cfg.CheckConfigForkOrder(); err != nil {
		t.Errorf("fork order: %v", err)
	}
	// Osaka at 0 and nothing after it: a later fork (Amsterdam, or the
	// Bogota that `geth --dev dumpgenesis` sets) moves every Engine API call
	// to other versions.
	if f := cfg.LatestFork(0); f != forks.Osaka {
		t.Errorf("fork at time 0 is %s, want Osaka", f)
	}
	if f := cfg.LatestFork(1 << 62); f != forks.Osaka {
		t.Errorf("fork schedule goes on to %s", f)
	}
	if bc := cfg.BlobConfig(forks.Osaka); bc == nil || bc.Max != 9 || bc.Target != 6 {
		t.Errorf("Osaka blob schedule %v, want Prague's 6/9", bc)
	}
	if g.GasLimit != 60_000_000 {
		t.Errorf("gas limit %d, the README says 60,000,000", g.GasLimit)
	}
	for _, c := range []struct {
		name string
		addr common.Address
		code []byte
	}{
		{"EIP-4788 beacon roots", params.BeaconRootsAddress, params.BeaconRootsCode},
		{"EIP-2935 history", params.HistoryStorageAddress, params.HistoryStorageCode},
		{"EIP-7002 withdrawal queue", params.WithdrawalQueueAddress, params.WithdrawalQueueCode},
		{"EIP-7251 consolidation queue", params.ConsolidationQueueAddress, params.ConsolidationQueueCode},
	} {
		if acc, ok := g.Alloc[c.addr]; !ok || string(acc.Code) != string(c.code) || acc.Nonce != 1 {
			t.Errorf("%s system contract at %s missing or not geth's code", c.name, c.addr)
		}
	}
	// The funded accounts are exactly the ones DevKeys sign for, the first
	// being the Foundry default.
	for i := range DevKeys {
		_, addr := DevKey(i)
		if acc, ok := g.Alloc[addr]; !ok || acc.Balance.Sign() <= 0 {
			t.Errorf("dev account %d (%s) not funded", i, addr)
		}
	}
	if _, first := DevKey(0); first != common.HexToAddress("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266") {
		t.Errorf("dev key 0 signs for %s", first)
	}
}
