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
	attrs   []*beacon.PayloadAttributes
	noID    bool
	badNext bool
}

func (f *fakeEngine) ForkchoiceUpdated(_ context.Context, fc beacon.ForkchoiceStateV1, attrs *beacon.PayloadAttributes, _ uint64) (*beacon.PayloadID, error) {
	f.attrs = append(f.attrs, attrs)
	if f.noID {
		return nil, nil
	}
	return &beacon.PayloadID{1}, nil
}

func (f *fakeEngine) GetPayload(_ context.Context, _ beacon.PayloadID, ts uint64) (*engine.Payload, error) {
	a := f.attrs[len(f.attrs)-1]
	parent := *a.BeaconRoot // the builder passes the parent hash here
	n := uint64(8)
	if f.badNext {
		n = 99
	}
	return &engine.Payload{ExecutionPayload: &beacon.ExecutableData{Number: n, ParentHash: parent, Timestamp: ts}}, nil
}

func TestBuildAttributes(t *testing.T) {
	now := time.Unix(1000, 0)
	f := &fakeEngine{}
	b := New(f, common.HexToAddress("0xfee"), func() time.Time { return now })
	parent := Parent{Number: 7, Hash: common.HexToHash("0xabc"), Timestamp: 999}

	p, err := b.Build(context.Background(), parent, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := f.attrs[0]
	switch {
	case a.Timestamp != 1000:
		t.Errorf("timestamp %d, want now (1000)", a.Timestamp)
	case a.Withdrawals == nil || len(a.Withdrawals) != 0:
		t.Errorf("withdrawals %v, want an empty list", a.Withdrawals)
	case a.BeaconRoot == nil || *a.BeaconRoot != parent.Hash || p.BeaconRoot != parent.Hash:
		t.Errorf("beacon root %v / %v, want the parent hash", a.BeaconRoot, p.BeaconRoot)
	case a.SuggestedFeeRecipient != common.HexToAddress("0xfee"):
		t.Errorf("fee recipient %s", a.SuggestedFeeRecipient)
	case a.Random == (common.Hash{}) || a.Random == parent.Hash:
		t.Errorf("prevRandao %s is predictable", a.Random)
	}

	// A parent in the future: timestamp = parent + 1, strictly above it.
	parent.Timestamp = 1005
	if _, err := b.Build(context.Background(), parent, 0); err != nil {
		t.Fatal(err)
	}
	if got := f.attrs[1].Timestamp; got != 1006 {
		t.Errorf("timestamp %d on a parent at 1005, want 1006", got)
	}
	if f.attrs[0].Random == f.attrs[1].Random {
		t.Error("prevRandao repeated across blocks")
	}
}

func TestBuildErrors(t *testing.T) {
	now := func() time.Time { return time.Unix(1000, 0) }
	parent := Parent{Number: 7, Hash: common.HexToHash("0xabc"), Timestamp: 999}
	if _, err := New(&fakeEngine{noID: true}, common.Address{}, now).Build(context.Background(), parent, 0); !errors.Is(err, ErrNoPayloadID) {
		t.Errorf("VALID without payload id: %v", err)
	}
	if _, err := New(&fakeEngine{badNext: true}, common.Address{}, now).Build(context.Background(), parent, 0); err == nil {
		t.Error("a payload at the wrong height was accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New(&fakeEngine{}, common.Address{}, now).Build(ctx, parent, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled during the build wait: %v", err)
	}
}
