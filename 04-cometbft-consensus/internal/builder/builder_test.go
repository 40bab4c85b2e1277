package builder

import (
	"context"
	"errors"
	"testing"
	"time"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
)

// fakeEngine records the attributes and returns a payload on the parent.
type fakeEngine struct {
	fc      []beacon.ForkchoiceStateV1
	attrs   []*beacon.PayloadAttributes
	noID    bool
	badNext bool
}

func (f *fakeEngine) ForkchoiceUpdated(_ context.Context, fc beacon.ForkchoiceStateV1, attrs *beacon.PayloadAttributes, _ uint64) (*beacon.PayloadID, error) {
	f.fc = append(f.fc, fc)
	f.attrs = append(f.attrs, attrs)
	if f.noID {
		return nil, nil
	}
	return &beacon.PayloadID{1}, nil
}

func (f *fakeEngine) GetPayload(_ context.Context, _ beacon.PayloadID, ts uint64) (*engine.Payload, error) {
	parent := f.fc[len(f.fc)-1].HeadBlockHash
	n := uint64(8)
	if f.badNext {
		n = 99
	}
	return &engine.Payload{ExecutionPayload: &beacon.ExecutableData{Number: n, ParentHash: parent, Timestamp: ts}}, nil
}

func TestStartAndFetch(t *testing.T) {
	f := &fakeEngine{}
	b := New(f, common.HexToAddress("0xfee"))
	parent := Parent{Number: 7, Hash: common.HexToHash("0xabc"), Timestamp: 999}
	want := Attributes{Timestamp: 1000, Random: common.HexToHash("0x5eed"), BeaconRoot: common.HexToHash("0xbeac")}

	id, err := b.Start(context.Background(), parent, want)
	if err != nil {
		t.Fatal(err)
	}
	a, fc := f.attrs[0], f.fc[0]
	switch {
	case fc.HeadBlockHash != parent.Hash || fc.SafeBlockHash != parent.Hash || fc.FinalizedBlockHash != parent.Hash:
		t.Errorf("forkchoice %+v, want the parent as head, safe and finalized", fc)
	case a.Timestamp != want.Timestamp || a.Random != want.Random:
		t.Errorf("timestamp %d, prevRandao %s: want the attributes given", a.Timestamp, a.Random)
	case a.BeaconRoot == nil || *a.BeaconRoot != want.BeaconRoot:
		t.Errorf("beacon root %v, want %s", a.BeaconRoot, want.BeaconRoot)
	case a.Withdrawals == nil || len(a.Withdrawals) != 0:
		t.Errorf("withdrawals %v, want an empty list", a.Withdrawals)
	case a.SuggestedFeeRecipient != common.HexToAddress("0xfee"):
		t.Errorf("fee recipient %s", a.SuggestedFeeRecipient)
	}
	p, err := b.Fetch(context.Background(), parent, id, want)
	if err != nil {
		t.Fatal(err)
	}
	if p.BeaconRoot != want.BeaconRoot || p.ExecutionPayload.Timestamp != want.Timestamp {
		t.Errorf("payload beacon root %s at %d, want the attributes'", p.BeaconRoot, p.ExecutionPayload.Timestamp)
	}
}

func TestStartAndFetchErrors(t *testing.T) {
	parent := Parent{Number: 7, Hash: common.HexToHash("0xabc"), Timestamp: 999}
	attrs := Attributes{Timestamp: 1000}
	if _, err := New(&fakeEngine{noID: true}, common.Address{}).Start(context.Background(), parent, attrs); !errors.Is(err, ErrNoPayloadID) {
		t.Errorf("VALID without payload id: %v", err)
	}
	b := New(&fakeEngine{badNext: true}, common.Address{})
	id, err := b.Start(context.Background(), parent, attrs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Fetch(context.Background(), parent, id, attrs); err == nil {
		t.Error("a payload at the wrong height was accepted")
	}
}

func TestTimestamp(t *testing.T) {
	for _, c := range []struct {
		blockTime time.Time
		parent    uint64
		want      uint64
	}{
		{time.Unix(1000, 0), 999, 1000},
		{time.Unix(1000, 900e6), 999, 1000}, // seconds, not rounded up
		{time.Unix(1000, 0), 1000, 1001},    // two blocks in one second
		{time.Unix(1000, 0), 1005, 1006},    // a parent ahead of the block time
	} {
		if got := Timestamp(c.blockTime, Parent{Timestamp: c.parent}); got != c.want {
			t.Errorf("Timestamp(%s, parent at %d) = %d, want %d", c.blockTime.UTC(), c.parent, got, c.want)
		}
	}
}
