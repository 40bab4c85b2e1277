package envelope

import (
	"bytes"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"

	cmttypes "github.com/cometbft/cometbft/types"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rlp"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
)

func payload() *engine.Payload {
	blobGas, excess := uint64(131072), uint64(0)
	return &engine.Payload{
		ExecutionPayload: &beacon.ExecutableData{Number: 7, BlockHash: common.HexToHash("0x07"), ParentHash: common.HexToHash("0x06"),
			FeeRecipient: common.HexToAddress("0xfee"), StateRoot: common.HexToHash("0x5"), ReceiptsRoot: common.HexToHash("0x4"),
			Random: common.HexToHash("0x3"), GasLimit: 60_000_000, GasUsed: 21000, Timestamp: 1_800_000_000,
			BaseFeePerGas: big.NewInt(7), Transactions: [][]byte{{0x02, 0x01}, bytes.Repeat([]byte{0}, 1000)},
			Withdrawals: []*types.Withdrawal{}, LogsBloom: make([]byte, 256), ExtraData: []byte{},
			BlobGasUsed: &blobGas, ExcessBlobGas: &excess},
		VersionedHashes: []common.Hash{common.HexToHash("0x01aa")},
		BeaconRoot:      common.HexToHash("0xbeac"),
		Requests:        []hexutil.Bytes{{0x01, 0xaa}},
	}
}

func TestRoundTrip(t *testing.T) {
	for name, p := range map[string]*engine.Payload{"full": payload(), "empty lists": func() *engine.Payload {
		p := payload()
		p.ExecutionPayload.Transactions, p.VersionedHashes, p.Requests = [][]byte{}, []common.Hash{}, []hexutil.Bytes{}
		return p
	}()} {
		t.Run(name, func(t *testing.T) {
			tx, err := Encode(p)
			if err != nil {
				t.Fatal(err)
			}
			if tx[0] != Version {
				t.Fatalf("version byte %d", tx[0])
			}
			got, err := Decode(tx)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, p) {
				t.Fatalf("round trip changed the payload:\n got %+v\nwant %+v", got.ExecutionPayload, p.ExecutionPayload)
			}
		})
	}
}

// A block of 8 MiB, the most geth builds or accepts since Osaka, has an
// envelope; the envelope is about the block's size (hex JSON was twice it).
func TestFullBlockFits(t *testing.T) {
	p := payload()
	p.ExecutionPayload.Transactions = [][]byte{}
	for range params.MaxBlockSize / (128 << 10) {
		p.ExecutionPayload.Transactions = append(p.ExecutionPayload.Transactions, make([]byte, 128<<10))
	}
	tx, err := Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(tx) > params.MaxBlockSize+overhead/2 {
		t.Errorf("an envelope of %d bytes for %d bytes of transactions", len(tx), params.MaxBlockSize)
	}
	p.ExecutionPayload.Transactions = append(p.ExecutionPayload.Transactions, make([]byte, overhead))
	if _, err := Encode(p); err == nil || !strings.Contains(err.Error(), "exceeds the envelope limit") {
		t.Errorf("a payload past MaxSize: %v", err)
	}
}

// Under block.max_bytes = BlockMaxBytes, the data CometBFT leaves a
// proposal (PrepareProposal's MaxTxBytes, with the most evidence a block
// may hold) takes the largest envelope.
func TestBlockMaxBytesHoldsTheLargestEnvelope(t *testing.T) {
	const evidence = 1 << 20 // CometBFT's default evidence.max_bytes
	for _, validators := range []int{1, 4, 100} {
		maxBytes := BlockMaxBytes(validators, evidence)
		data := cmttypes.MaxDataBytes(maxBytes, evidence, validators)
		if framed := cmttypes.ComputeProtoSizeForTxs([]cmttypes.Tx{make([]byte, MaxSize)}); data < framed {
			t.Errorf("%d validators: block.max_bytes %d leaves %d bytes of data, the largest envelope takes %d", validators, maxBytes, data, framed)
		}
		if data > MaxSize+txFraming {
			t.Errorf("%d validators: block.max_bytes %d leaves %d bytes of data, more than the largest envelope takes", validators, maxBytes, data)
		}
	}
}

func TestEncodeRefusesWhatNoVersionCarries(t *testing.T) {
	preCancun := payload()
	preCancun.ExecutionPayload.BlobGasUsed = nil
	amsterdam := payload()
	amsterdam.ExecutionPayload.SlotNumber = new(uint64)
	for name, p := range map[string]*engine.Payload{"before Cancun": preCancun, "Amsterdam": amsterdam, "no payload": {}} {
		if _, err := Encode(p); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

// reencode returns the envelope of p's wire form after change.
func reencode(t *testing.T, change func(w *wire)) []byte {
	t.Helper()
	tx, err := Encode(payload())
	if err != nil {
		t.Fatal(err)
	}
	var w wire
	if err := rlp.DecodeBytes(tx[1:], &w); err != nil {
		t.Fatal(err)
	}
	change(&w)
	body, err := rlp.EncodeToBytes(&w)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{Version}, body...)
}

// Every way of writing a payload other than its one encoding is refused:
// a proposer cannot pad a block or vary its bytes.
func TestDecodeRefusesAllButTheCanonicalEncoding(t *testing.T) {
	good, err := Encode(payload())
	if err != nil {
		t.Fatal(err)
	}
	body := good[1:]
	content, _, err := rlp.SplitList(body)
	if err != nil {
		t.Fatal(err)
	}
	headerLen := len(body) - len(content)
	// The same list with its size written in one byte more than it needs.
	longHeader := append([]byte{Version, 0xf7 + byte(headerLen), 0}, body[1:headerLen]...)
	longHeader = append(longHeader, content...)
	// The number (field 7) written with a leading zero byte.
	nonMinimal := rlpFields(t, body)
	nonMinimal[6] = []byte{0x82, 0x00, 0x07}
	// Reordered: logsBloom and prevRandao swapped (two fields of one type
	// swapped make another payload, whose block hash geth refuses); a
	// field too many or too few.
	reordered := rlpFields(t, body)
	reordered[4], reordered[5] = reordered[5], reordered[4]
	extra := append(rlpFields(t, body), []byte{0x80})
	short := rlpFields(t, body)[:19]
	for _, tc := range []struct {
		name, want string
		tx         []byte
	}{
		{"empty", "empty transaction", nil},
		{"version 1 (hex JSON)", "version 1", append([]byte{1}, `{"executionPayload":{}}`...)},
		{"a kvstore tx", "version 107", []byte("key=value")},
		{"garbage", "malformed envelope", []byte("\x02not rlp")},
		{"trailing bytes", "more than one value", append(append([]byte{}, good...), 0x00)},
		{"padding in a trailing list", "more than one value", append(append([]byte{}, good...), 0xc0)},
		{"truncated", "malformed envelope", good[:len(good)/2]},
		{"non-minimal list size", "non-canonical", longHeader},
		{"non-minimal integer", "non-canonical", wrapFields(nonMinimal)},
		{"reordered fields", "too long for common.Hash", wrapFields(reordered)},
		{"unknown field", "too many elements", wrapFields(extra)},
		{"missing field", "too few elements", wrapFields(short)},
		{"short logsBloom", "logsBloom of 255 bytes", reencode(t, func(w *wire) { w.LogsBloom = w.LogsBloom[1:] })},
		{"long extraData", "extraData of 33 bytes", reencode(t, func(w *wire) { w.ExtraData = make([]byte, 33) })},
		{"oversized", "limit", append([]byte{Version}, bytes.Repeat([]byte{0}, MaxSize)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.tx)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrMalformed naming %q", err, tc.want)
			}
		})
	}
}

// rlpFields splits an RLP list into the raw encodings of its elements.
func rlpFields(t *testing.T, list []byte) [][]byte {
	t.Helper()
	content, _, err := rlp.SplitList(list)
	if err != nil {
		t.Fatal(err)
	}
	var fields [][]byte
	for len(content) > 0 {
		_, _, rest, err := rlp.Split(content)
		if err != nil {
			t.Fatal(err)
		}
		fields = append(fields, content[:len(content)-len(rest)])
		content = rest
	}
	return fields
}

// wrapFields makes an envelope of raw RLP elements, with a minimal list
// header.
func wrapFields(fields [][]byte) []byte {
	var content []byte
	for _, f := range fields {
		content = append(content, f...)
	}
	header := []byte{0xc0 + byte(len(content))}
	if len(content) >= 56 {
		size := new(big.Int).SetInt64(int64(len(content))).Bytes()
		header = append([]byte{0xf7 + byte(len(size))}, size...)
	}
	return append(append([]byte{Version}, header...), content...)
}
