package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// Blocks is what the block API needs from the store.
type Blocks interface {
	Head(ctx context.Context) (state.Head, error)
	Block(ctx context.Context, n uint64) (*state.Block, error)
	BlockByHash(ctx context.Context, hash common.Hash) (*state.Block, error)
	BlocksAfter(ctx context.Context, after uint64, limit int) ([]*state.Block, error)
}

// Limits of GET /blocks?after=N&limit=M.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// HandleBlocks serves the block API from store:
//
//	GET /blocks/latest               the stored head
//	GET /blocks/{number|0xhash}      one block
//	GET /blocks?after=N&limit=M      up to M blocks above N, oldest first (M ≤ 1000)
//
// Malformed input is a 400 that names the parameter; a missing block a 404.
func (s *Server) HandleBlocks(store Blocks) {
	s.mux.HandleFunc("GET /blocks/{id}", func(w http.ResponseWriter, r *http.Request) {
		b, err := blockByID(r.Context(), store, r.PathValue("id"))
		writeBlockResult(w, b, err)
	})
	s.mux.HandleFunc("GET /blocks", func(w http.ResponseWriter, r *http.Request) {
		after, limit, err := pageParams(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		blocks, err := store.BlocksAfter(r.Context(), after, limit)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		out := make([]state.BlockJSON, len(blocks))
		for i, b := range blocks {
			out[i] = state.NewBlockJSON(b)
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// errBadRequest marks input errors (400).
var errBadRequest = errors.New("bad request")

func blockByID(ctx context.Context, store Blocks, id string) (*state.Block, error) {
	switch {
	case id == "latest":
		head, err := store.Head(ctx)
		if err != nil {
			return nil, err
		}
		return store.Block(ctx, head.Number)
	case strings.HasPrefix(id, "0x"):
		raw, err := hexutil.Decode(id)
		if err != nil || len(raw) != common.HashLength {
			return nil, fmt.Errorf("%w: block id %q: want a number, a 32-byte 0x hash, or latest", errBadRequest, id)
		}
		return store.BlockByHash(ctx, common.BytesToHash(raw))
	default:
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: block id %q: want a number, a 32-byte 0x hash, or latest", errBadRequest, id)
		}
		return store.Block(ctx, n)
	}
}

func pageParams(r *http.Request) (after uint64, limit int, err error) {
	q := r.URL.Query()
	a := q.Get("after")
	if a == "" {
		return 0, 0, errors.New("after: required (the block number to list from, exclusive)")
	}
	if after, err = strconv.ParseUint(a, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("after %q: not a block number", a)
	}
	limit = DefaultPageSize
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > MaxPageSize {
			return 0, 0, fmt.Errorf("limit %q: want 1 to %d", l, MaxPageSize)
		}
	}
	return after, limit, nil
}

func writeBlockResult(w http.ResponseWriter, b *state.Block, err error) {
	switch {
	case errors.Is(err, errBadRequest):
		writeError(w, http.StatusBadRequest, err)
	case errors.Is(err, state.ErrNoPayload):
		writeError(w, http.StatusNotFound, err)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err)
	default:
		writeJSON(w, http.StatusOK, state.NewBlockJSON(b))
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// Proposals is what GET /proposals/{hash} serves: the block the leader
// proposed last, encoded, if it has that hash.
type Proposals interface {
	Proposal(hash common.Hash) ([]byte, bool)
}

// HandleProposals serves the leader's current proposal to co-signers too
// big a block to carry in its notice:
//
//	GET /proposals/{0xhash}    the proposed block (signed in the proposal domain), or 404
func (s *Server) HandleProposals(p Proposals) {
	s.mux.HandleFunc("GET /proposals/{hash}", func(w http.ResponseWriter, r *http.Request) {
		raw, err := hexutil.Decode(r.PathValue("hash"))
		if err != nil || len(raw) != common.HashLength {
			writeError(w, http.StatusBadRequest, fmt.Errorf("proposal %q: want a 32-byte 0x hash", r.PathValue("hash")))
			return
		}
		body, ok := p.Proposal(common.BytesToHash(raw))
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Errorf("no proposal %s (not proposed here, or superseded)", r.PathValue("hash")))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}
