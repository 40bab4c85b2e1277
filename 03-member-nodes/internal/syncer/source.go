package syncer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// ErrNoLeader means no node holds the lease (an election is under way) or
// the holder has not announced its API.
var ErrNoLeader = errors.New("no leader to sync from")

// LeaderAPI fetches blocks from the current leader's block API, found
// through Redis: the lease names the holder, the node directory its URL.
//
// Members read from the leader's API rather than from the cluster
// database: they need no credentials to it, add no load to it, and verify
// every block they get, so a compromised transport cannot feed them blocks.
type LeaderAPI struct {
	rdb    redis.UniversalClient
	prefix string
	http   *http.Client
}

// NewLeaderAPI returns a source that looks the leader up under prefix.
func NewLeaderAPI(rdb redis.UniversalClient, prefix string) *LeaderAPI {
	return &LeaderAPI{rdb: rdb, prefix: prefix, http: &http.Client{Timeout: 10 * time.Second}}
}

// maxResponse bounds one page of blocks: the leader's store stops a page
// at state.MaxPageBytes of payloads, plus one block (up to 17 MB of JSON).
const maxResponse = 2*state.MaxPageBytes + 64<<20

// BlocksAfter returns up to limit blocks above after, oldest first, from the
// leader's API.
func (s *LeaderAPI) BlocksAfter(ctx context.Context, after uint64, limit int) ([]*state.Block, error) {
	holder, _, ok, err := election.Current(ctx, s.rdb, s.prefix)
	if err != nil {
		return nil, fmt.Errorf("find the leader: %w", err)
	}
	if !ok {
		return nil, ErrNoLeader
	}
	u := "/blocks?" + url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(limit)}}.Encode()
	body, err := s.get(ctx, holder, u)
	if err != nil {
		return nil, err
	}
	var page []state.BlockJSON
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, fmt.Errorf("leader %s: malformed blocks from %s: %w", holder, u, err)
	}
	if len(page) > limit {
		return nil, fmt.Errorf("leader %s: %d blocks for a limit of %d", holder, len(page), limit)
	}
	out := make([]*state.Block, len(page))
	for i, b := range page {
		out[i] = b.Block()
	}
	return out, nil
}

// Proposal fetches the block leader proposed with this hash
// (GET /proposals/{hash}): a co-signer's copy of a proposal too big for
// its notice. It is verified like any proposal before it is executed.
func (s *LeaderAPI) Proposal(ctx context.Context, leader string, hash common.Hash) (*state.Block, error) {
	body, err := s.get(ctx, leader, "/proposals/"+hash.Hex())
	if err != nil {
		return nil, err
	}
	var b state.BlockJSON
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("leader %s: malformed proposal %s: %w", leader, hash, err)
	}
	if b.Hash != hash {
		return nil, fmt.Errorf("leader %s: asked for proposal %s, got %s", leader, hash, b.Hash)
	}
	return b.Block(), nil
}

// get fetches path from node id's API, found in the node directory.
func (s *LeaderAPI) get(ctx context.Context, id, path string) ([]byte, error) {
	base, err := election.URL(ctx, s.rdb, s.prefix, id)
	if errors.Is(err, election.ErrUnknownNode) {
		return nil, fmt.Errorf("%w: leader %s has not announced its API", ErrNoLeader, id)
	}
	if err != nil {
		return nil, fmt.Errorf("find the leader's API: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("leader %s API %q: %w", id, base, err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("leader %s: %w", id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("leader %s: read %s: %w", id, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("leader %s: GET %s%s: %s: %.200s", id, base, path, resp.Status, body)
	}
	return body, nil
}
