package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/geth-consensus/tutorial/devnet"
)

// TestGenesisAllocatesTheRegistry: genesis.json holds the committed
// bytecode at Address, owned by Owner.
func TestGenesisAllocatesTheRegistry(t *testing.T) {
	path, err := devnet.FindUp("genesis.json")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g core.Genesis
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	acct, ok := g.Alloc[Address]
	if !ok {
		t.Fatalf("%s allocates nothing at %s: run `go run ./contracts`", path, Address)
	}
	if !bytes.Equal(acct.Code, RuntimeCode()) {
		t.Fatalf("%s: the code at %s is not internal/registry/ValidatorRegistry.bin: run `go run ./contracts`", path, Address)
	}
	if got := common.BytesToAddress(acct.Storage[common.HexToHash(OwnerSlot)].Bytes()); got != Owner {
		t.Fatalf("%s: the registry's owner (slot 0) is %s, want %s", path, got, Owner)
	}
	again, err := WithAlloc(b, "0x"+common.Bytes2Hex(RuntimeCode()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatal("WithAlloc on the committed genesis.json changes it")
	}
}

// TestWithAllocAddsThenReplaces: the entry is added to a genesis without
// it, replaced in one with it, and nothing else in the file changes.
func TestWithAllocAddsThenReplaces(t *testing.T) {
	base := "{\n  \"gasLimit\": \"0x1\",\n  \"alloc\": {\n    \"0x00000000000000000000000000000000000000aa\": {\n      \"balance\": \"0x1\"\n    }\n  }\n}\n"
	added, err := WithAlloc([]byte(base), "0x6001")
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Alloc types.GenesisAlloc }
	if err := json.Unmarshal(added, &g); err != nil {
		t.Fatalf("%v\n%s", err, added)
	}
	if len(g.Alloc) != 2 || !bytes.Equal(g.Alloc[Address].Code, []byte{0x60, 0x01}) {
		t.Fatalf("alloc after adding: %v", g.Alloc)
	}
	replaced, err := WithAlloc(added, "0x6002")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(string(added), "0x6001", "0x6002", 1); string(replaced) != want {
		t.Fatalf("replacing changed more than the code:\n%s", replaced)
	}
	if _, err := WithAlloc([]byte(`{"alloc": {}, "gasLimit": "0x1"}`), "0x60"); err == nil {
		t.Fatal("a genesis whose alloc is not last was edited blindly")
	}
}

// TestBytecodeIsBuiltFromTheSource compiles contracts/ValidatorRegistry.sol
// with the pinned solc and compares it with the committed ABI and code.
// It needs npx (Node.js), and fails without it.
func TestBytecodeIsBuiltFromTheSource(t *testing.T) {
	if _, err := exec.LookPath("npx"); err != nil {
		t.Fatal("npx not found: install Node.js (Debian: apt-get install nodejs npm) to check the registry's bytecode against its source")
	}
	src, err := os.ReadFile("../../contracts/ValidatorRegistry.sol")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, err := Compile(ctx, string(src))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.ABI, ABIJSON()) {
		t.Error("internal/registry/ValidatorRegistry.abi.json is not what the source compiles to: run `go run ./contracts`")
	}
	if !bytes.Equal(common.FromHex(a.RuntimeCode), RuntimeCode()) {
		t.Error("internal/registry/ValidatorRegistry.bin is not what the source compiles to: run `go run ./contracts`")
	}
}

// TestChanges decodes PowerChanged events and skips every other log.
func TestChanges(t *testing.T) {
	key := [32]byte{1, 2, 3}
	data, err := ABI.Events["PowerChanged"].Inputs.NonIndexed().Pack(uint64(7))
	if err != nil {
		t.Fatal(err)
	}
	tx := common.HexToHash("0xabc")
	other := common.HexToAddress("0x1234")
	logs := []types.Log{
		{Address: Address, Topics: []common.Hash{PowerChanged, key}, Data: data, TxHash: tx},
		{Address: other, Topics: []common.Hash{PowerChanged, key}, Data: data},                                 // another contract
		{Address: Address, Topics: []common.Hash{ABI.Events["OwnershipTransferred"].ID, {}, {}}},               // another event
		{Address: Address, Topics: []common.Hash{PowerChanged, {9}}, Data: common.LeftPadBytes([]byte{0}, 32)}, // a removal
		{Address: Address, Topics: []common.Hash{PowerChanged, {8}}, Data: data, Removed: true},                // reorged away
	}
	got, bad := Changes(Address, logs)
	if len(bad) != 0 {
		t.Fatal(bad)
	}
	want := []Change{{PubKey: key, Power: 7, TxHash: tx}, {PubKey: [32]byte{9}, Power: 0}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Changes = %+v, want %+v", got, want)
	}
	malformed := []types.Log{
		{Address: Address, Topics: []common.Hash{PowerChanged, key}, Data: []byte{1}},
		{Address: Address, Topics: []common.Hash{PowerChanged}, Data: data},
		{Address: Address, Topics: []common.Hash{PowerChanged, key}, Data: data, TxHash: tx},
	}
	got, bad = Changes(Address, malformed)
	if len(got) != 1 || got[0] != want[0] || len(bad) != 2 {
		t.Fatalf("malformed logs: changes %+v, bad %v: want the valid one and two reasons", got, bad)
	}
}

// TestCalls: the calldata packs and the revert data names the error.
func TestCalls(t *testing.T) {
	if got := SetPower([32]byte{1}, 5); len(got) != 4+64 {
		t.Fatalf("setPower calldata is %d bytes", len(got))
	}
	if got := SetPowers([][32]byte{{1}, {2}}, []uint64{0, 0}); len(got) < 4+64+3*32 {
		t.Fatalf("setPowers calldata is %d bytes", len(got))
	}
	e := ABI.Errors["NotOwner"]
	data, err := e.Inputs.Pack(common.HexToAddress("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"))
	if err != nil {
		t.Fatal(err)
	}
	if got := RevertReason(append(e.ID[:4:4], data...)); got != "NotOwner(0x70997970C51812dc3A010C7d01b50e0d17dc79C8)" {
		t.Fatalf("RevertReason = %q", got)
	}
	if got := RevertReason([]byte{1, 2, 3, 4}); got != "" {
		t.Fatalf("RevertReason of unknown data = %q", got)
	}
	if MaxPower != uint64(cmttypes.MaxTotalVotingPower) {
		t.Fatalf("MaxPower %d is not CometBFT's MaxTotalVotingPower %d", MaxPower, cmttypes.MaxTotalVotingPower)
	}
}
