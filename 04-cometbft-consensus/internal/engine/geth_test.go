package engine

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/geth-consensus/tutorial/devnet"
)

// These run the client against a real geth (the devnet's, built from the
// pinned module) over a ws:// Engine API URL, the transport whose connection
// outlives a call.

// gethClient dials g's Engine API over ws:// with secret (hex or a file;
// empty: the repository's jwt.hex).
func gethClient(t *testing.T, g *devnet.GethNode, secret string) *Client {
	t.Helper()
	genesisPath, err := devnet.FindUp("genesis.json")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(genesisPath)
	if err != nil {
		t.Fatal(err)
	}
	var genesis core.Genesis
	if err := json.Unmarshal(b, &genesis); err != nil {
		t.Fatal(err)
	}
	if secret == "" {
		if secret, err = devnet.FindUp("jwt.hex"); err != nil {
			t.Fatal(err)
		}
	}
	key, err := LoadJWTSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	url := "ws" + strings.TrimPrefix(g.EngineURL(), "http")
	c, err := Dial(context.Background(), Options{URL: url, Secret: key, Chain: genesis.Config})
	if err != nil {
		t.Fatalf("Dial %s: %v", url, err)
	}
	t.Cleanup(c.Close)
	return c
}

// head polls until a call over the client succeeds, proving it reached geth.
func head(t *testing.T, c *Client) *types.Header {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		h, err := c.HeaderByNumber(context.Background(), nil)
		if err == nil {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer over the client within a minute: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildOne makes geth build, execute and adopt one block over the client.
func buildOne(t *testing.T, c *Client, parent *types.Header) *Payload {
	t.Helper()
	ctx := context.Background()
	fc := engine.ForkchoiceStateV1{HeadBlockHash: parent.Hash(), SafeBlockHash: parent.Hash(), FinalizedBlockHash: parent.Hash()}
	attrs := &engine.PayloadAttributes{Timestamp: max(uint64(time.Now().Unix()), parent.Time+1),
		Withdrawals: []*types.Withdrawal{}, BeaconRoot: &common.Hash{}}
	id, err := c.ForkchoiceUpdated(ctx, fc, attrs, parent.Time)
	if err != nil || id == nil {
		t.Fatalf("forkchoiceUpdated with attributes: id %v, %v", id, err)
	}
	p, err := c.GetPayload(ctx, *id, attrs.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	p.BeaconRoot = *attrs.BeaconRoot
	if err := c.NewPayload(ctx, p); err != nil {
		t.Fatal(err)
	}
	adopt(t, c, p)
	return p
}

// adopt makes p's block head, safe and finalized.
func adopt(t *testing.T, c *Client, p *Payload) {
	t.Helper()
	hash := p.ExecutionPayload.BlockHash
	fc := engine.ForkchoiceStateV1{HeadBlockHash: hash, SafeBlockHash: hash, FinalizedBlockHash: hash}
	if _, err := c.ForkchoiceUpdated(context.Background(), fc, nil, p.ExecutionPayload.Timestamp); err != nil {
		t.Fatal(err)
	}
}

// A validator may start before its geth: Dial does not contact it, calls
// fail as unreachable until it is up, and after geth is SIGKILLed and
// restarted the same client reaches it again (geth's ws client reconnects).
func TestOverWebSocketStartsBeforeGethAndReconnects(t *testing.T) {
	g := devnet.StartT(t, devnet.Config{GethNodes: 1}).Geth[0]
	if err := g.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c := gethClient(t, g, "")
	if _, err := c.HeaderByNumber(context.Background(), nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("call with geth down: %v, want ErrUnreachable", err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	genesis := head(t, c)
	if err := c.CheckCapabilities(context.Background(), uint64(time.Now().Unix())); err != nil {
		t.Fatal(err)
	}
	built := buildOne(t, c, genesis)

	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	// The same client answers again. A geth SIGKILLed right after a block
	// may have lost it (its writes were not flushed): the CL hands it over
	// again, as its recovery replays its own store, and builds on.
	head(t, c)
	if err := c.NewPayload(context.Background(), built); err != nil {
		t.Fatalf("replaying block #1 to the restarted geth: %v", err)
	}
	adopt(t, c, built)
	restored, err := c.HeaderByHash(context.Background(), built.ExecutionPayload.BlockHash)
	if err != nil {
		t.Fatal(err)
	}
	next := buildOne(t, c, restored).ExecutionPayload.BlockHash
	if h := head(t, c); h.Hash() != next || h.Number.Uint64() != 2 {
		t.Fatalf("head #%d %s after building on the restarted geth, want #2 %s", h.Number, h.Hash(), next)
	}
}

// A wrong secret over ws:// is refused in the handshake, where geth gives no
// reason: the error still names the secret (and the clock).
func TestWrongSecretOverWebSocketIsNamed(t *testing.T) {
	g := devnet.StartT(t, devnet.Config{GethNodes: 1}).Geth[0]
	c := gethClient(t, g, "0x"+strings.Repeat("11", 32))
	_, err := c.HeaderByNumber(context.Background(), nil)
	if !errors.Is(err, ErrJWTRejected) || !strings.Contains(err.Error(), "secret") {
		t.Fatalf("err = %v, want ErrJWTRejected naming the secret", err)
	}
}
