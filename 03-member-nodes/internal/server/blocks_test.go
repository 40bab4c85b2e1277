package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

type readyNode struct{}

func (readyNode) Ready() (bool, string) { return true, "" }
func (readyNode) Status() any           { return nil }

// The block API over a real PostgreSQL store holding blocks 0-3.
func TestBlockAPI(t *testing.T) {
	n := devnet.StartT(t, devnet.Config{Postgres: 1})
	ctx := context.Background()
	store, err := state.Open(ctx, n.Postgres[0].URL(), state.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	parent := common.HexToHash("0x9e")
	if err := store.Init(ctx, state.Head{Hash: parent}); err != nil {
		t.Fatal(err)
	}
	hashes := []common.Hash{parent}
	for i := uint64(1); i <= 3; i++ {
		hash := common.BigToHash(big.NewInt(int64(100 + i)))
		b := state.Block{Number: i, Hash: hash, ParentHash: parent, Timestamp: 10 + i, LeaderID: "leader-1", Epoch: 1, Signature: []byte{0xaa},
			Payload: &engine.Payload{ExecutionPayload: &beacon.ExecutableData{Number: i, ParentHash: parent, BlockHash: hash,
				BaseFeePerGas: big.NewInt(1), LogsBloom: make([]byte, 256), ExtraData: []byte{}, Transactions: [][]byte{}},
				VersionedHashes: []common.Hash{}, Requests: []hexutil.Bytes{}}}
		if err := store.Commit(ctx, b); err != nil {
			t.Fatal(err)
		}
		parent = hash
		hashes = append(hashes, hash)
	}
	srv := New("127.0.0.1:0", readyNode{}, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	srv.HandleBlocks(store)
	ts := httptest.NewServer(srv)
	defer ts.Close()

	get := func(path string) (int, []byte) {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	one := func(path string) state.BlockJSON {
		t.Helper()
		code, body := get(path)
		var b state.BlockJSON
		if code != 200 || json.Unmarshal(body, &b) != nil {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		return b
	}
	if b := one("/blocks/latest"); b.Number != 3 || b.Hash != hashes[3] {
		t.Errorf("latest = %d %s", b.Number, b.Hash)
	}
	b2 := one("/blocks/2")
	if b2.Payload == nil || b2.Payload.ExecutionPayload.BlockHash != hashes[2] || b2.Leader != "leader-1" || len(b2.Signature) != 1 {
		t.Errorf("block 2 = %+v", b2)
	}
	if b := one("/blocks/" + hashes[2].Hex()); b.Number != 2 {
		t.Errorf("by hash: %d", b.Number)
	}
	if b := one("/blocks/0"); b.Payload != nil || b.Hash != hashes[0] {
		t.Errorf("genesis = %+v", b)
	}

	code, body := get("/blocks?after=0&limit=2")
	var page []state.BlockJSON
	if code != 200 || json.Unmarshal(body, &page) != nil || len(page) != 2 || page[0].Number != 1 || page[1].Number != 2 {
		t.Errorf("page after 0: %d %s", code, body)
	}
	if code, body := get("/blocks?after=3"); code != 200 || string(body) != "[]\n" {
		t.Errorf("page after the head: %d %s", code, body)
	}

	for path, want := range map[string]int{
		"/blocks/99":                     404,
		"/blocks/" + common.Hash{}.Hex(): 404,
		"/blocks/abc":                    400,
		"/blocks/-1":                     400,
		"/blocks/0x1234":                 400,
		"/blocks/0xzz":                   400,
		"/blocks":                        400,
		"/blocks?after=x":                400,
		"/blocks?after=1&limit=0":        400,
		"/blocks?after=1&limit=1001":     400,
		"/blocks?after=1&limit=many":     400,
	} {
		if code, body := get(path); code != want {
			t.Errorf("%s: %d %s, want %d", path, code, body, want)
		}
	}
}

type oneProposal struct {
	hash common.Hash
	body []byte
}

func (p oneProposal) Proposal(hash common.Hash) ([]byte, bool) { return p.body, hash == p.hash }

// GET /proposals/{hash}: the leader's current proposal, 404 for any other
// hash (superseded, or never proposed here), 400 for a malformed one.
func TestProposalAPI(t *testing.T) {
	srv := New("127.0.0.1:0", readyNode{}, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	p := oneProposal{hash: common.HexToHash("0x07"), body: []byte(`{"number":"0x7"}`)}
	srv.HandleProposals(p)
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/proposals/" + p.hash.Hex(), http.StatusOK, `{"number":"0x7"}`},
		{"/proposals/" + common.HexToHash("0x08").Hex(), http.StatusNotFound, "not proposed here, or superseded"},
		{"/proposals/0x07", http.StatusBadRequest, "want a 32-byte 0x hash"},
	} {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, c.path, nil))
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("GET %s: %d %s, want %d with %q", c.path, w.Code, w.Body, c.code, c.body)
		}
	}
}
