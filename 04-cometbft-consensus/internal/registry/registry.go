// Package registry is the stage 4 chain's validator registry contract, as
// the validators and the `validator` command see it: its address in
// genesis.json, its ABI and bytecode (built from
// contracts/ValidatorRegistry.sol by `go run ./contracts`), the calls that
// change the set, and the PowerChanged events the app turns into CometBFT
// validator updates.
package registry

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// Address is where genesis.json puts the registry.
var Address = common.HexToAddress("0x0000000000000000000000000000000000001000")

// Owner is the owner genesis.json gives the registry: the devnet's first
// dev account. A real chain puts a multisig or a staking contract here.
var Owner = common.HexToAddress("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")

// MaxPower is the contract's MAX_POWER: CometBFT's MaxTotalVotingPower.
const MaxPower = uint64(1<<63-1) / 8

//go:embed ValidatorRegistry.abi.json
var abiJSON []byte

//go:embed ValidatorRegistry.bin
var runtimeHex string

// ABI is the contract's interface.
var ABI = func() abi.ABI {
	a, err := abi.JSON(bytes.NewReader(abiJSON))
	if err != nil {
		panic("registry: embedded ABI: " + err.Error())
	}
	return a
}()

// ABIJSON returns the ABI as solc wrote it.
func ABIJSON() []byte { return abiJSON }

// RuntimeCode returns the contract's deployed bytecode, as genesis.json
// allocates it at Address.
func RuntimeCode() []byte { return hexutil.MustDecode(strings.TrimSpace(runtimeHex)) }

// PowerChanged is the topic of the event every change emits.
var PowerChanged = ABI.Events["PowerChanged"].ID

// Change is one PowerChanged event: pubKey's power set to Power (0:
// removed), by transaction TxHash.
type Change struct {
	PubKey [32]byte
	Power  uint64
	TxHash common.Hash
}

// Changes returns the registry's PowerChanged events among logs, in their
// order in the block. A log from another address, or of another event, is
// skipped; so is a PowerChanged log that does not decode (the contract
// never emits one: another contract at the address might), which is
// returned in bad with the reason, for every validator to skip alike.
func Changes(registry common.Address, logs []types.Log) (changes []Change, bad []error) {
	for _, l := range logs {
		if l.Address != registry || len(l.Topics) == 0 || l.Topics[0] != PowerChanged || l.Removed {
			continue
		}
		c, err := decode(l)
		if err != nil {
			bad = append(bad, fmt.Errorf("PowerChanged log %d of tx %s: %w", l.Index, l.TxHash, err))
			continue
		}
		changes = append(changes, c)
	}
	return changes, bad
}

func decode(l types.Log) (Change, error) {
	if len(l.Topics) != 2 {
		return Change{}, fmt.Errorf("%d topics, want 2", len(l.Topics))
	}
	v, err := ABI.Events["PowerChanged"].Inputs.NonIndexed().Unpack(l.Data)
	if err != nil {
		return Change{}, fmt.Errorf("data %x: %w", l.Data, err)
	}
	power, ok := v[0].(uint64)
	if len(v) != 1 || !ok {
		return Change{}, fmt.Errorf("data %x: not one uint64", l.Data)
	}
	return Change{PubKey: l.Topics[1], Power: power, TxHash: l.TxHash}, nil
}

// SetPower is the calldata that sets pubKey's power (0 removes it).
func SetPower(pubKey [32]byte, power uint64) []byte {
	return pack("setPower", pubKey, power)
}

// SetPowers is the calldata that sets several powers at one height.
func SetPowers(pubKeys [][32]byte, powers []uint64) []byte {
	return pack("setPowers", pubKeys, powers)
}

// KeysCall is the calldata of keys(): every key ever set, with its power.
func KeysCall() []byte { return pack("keys") }

// UnpackKeys decodes what keys() returns.
func UnpackKeys(out []byte) ([][32]byte, []uint64, error) {
	v, err := ABI.Unpack("keys", out)
	if err != nil {
		return nil, nil, fmt.Errorf("keys(): %w", err)
	}
	keys, ok1 := v[0].([][32]byte)
	powers, ok2 := v[1].([]uint64)
	if !ok1 || !ok2 || len(keys) != len(powers) {
		return nil, nil, fmt.Errorf("keys(): unexpected result %T %T", v[0], v[1])
	}
	return keys, powers, nil
}

// OwnerCall is the calldata of owner().
func OwnerCall() []byte { return pack("owner") }

func pack(method string, args ...any) []byte {
	b, err := ABI.Pack(method, args...)
	if err != nil {
		panic(fmt.Sprintf("registry: pack %s: %v", method, err)) // the arguments' types are fixed above
	}
	return b
}

// RevertReason names the contract's custom error in a call's revert data
// ("NotOwner(0x…)"), or returns "" when data is not one of them.
func RevertReason(data []byte) string {
	if len(data) < 4 {
		return ""
	}
	for name, e := range ABI.Errors {
		if !bytes.Equal(e.ID[:4], data[:4]) {
			continue
		}
		v, err := e.Inputs.Unpack(data[4:])
		if err != nil {
			return name
		}
		args := make([]string, len(v))
		for i, a := range v {
			args[i] = fmt.Sprint(a)
		}
		return fmt.Sprintf("%s(%s)", name, strings.Join(args, ", "))
	}
	return ""
}
