package envelope

import (
	"bytes"
	"errors"
	"math/big"
	"strings"
	"testing"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
)

func payload() *engine.Payload {
	return &engine.Payload{
		ExecutionPayload: &beacon.ExecutableData{Number: 7, BlockHash: common.HexToHash("0x07"), ParentHash: common.HexToHash("0x06"),
			BaseFeePerGas: big.NewInt(7), Transactions: [][]byte{{0x02, 0x01}}, Withdrawals: []*types.Withdrawal{}, LogsBloom: make([]byte, 256), ExtraData: []byte{}},
		BeaconRoot: common.HexToHash("0xbeac"),
		Requests:   []hexutil.Bytes{},
	}
}

func TestRoundTrip(t *testing.T) {
	tx, err := Encode(payload())
	if err != nil {
		t.Fatal(err)
	}
	if tx[0] != Version {
		t.Fatalf("version byte %d", tx[0])
	}
	p, err := Decode(tx)
	if err != nil {
		t.Fatal(err)
	}
	want := payload()
	if p.ExecutionPayload.BlockHash != want.ExecutionPayload.BlockHash || p.BeaconRoot != want.BeaconRoot ||
		!bytes.Equal(p.ExecutionPayload.Transactions[0], want.ExecutionPayload.Transactions[0]) {
		t.Fatalf("round trip changed the payload: %+v", p)
	}
}

func TestDecodeRefusesWhatIsNotAnEnvelope(t *testing.T) {
	good, err := Encode(payload())
	if err != nil {
		t.Fatal(err)
	}
	noWithdrawals := payload()
	noWithdrawals.ExecutionPayload.Withdrawals = nil
	nw, _ := Encode(noWithdrawals)
	noRequests := payload()
	noRequests.Requests = nil
	nr, _ := Encode(noRequests)
	for _, tc := range []struct {
		name, want string
		tx         []byte
	}{
		{"empty", "empty transaction", nil},
		{"other version", "version 2", append([]byte{2}, good[1:]...)},
		{"garbage", "invalid character", []byte("\x01not json")},
		{"a kvstore tx", "version 107", []byte("key=value")},
		{"truncated", "unexpected end", good[:len(good)/2]},
		{"no payload", "no executionPayload", []byte("\x01{}")},
		{"no withdrawals", "withdrawals missing", nw},
		{"no requests", "executionRequests missing", nr},
		{"oversized", "limit", append([]byte{Version}, bytes.Repeat([]byte{' '}, MaxSize)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.tx)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrMalformed naming %q", err, tc.want)
			}
		})
	}
}
