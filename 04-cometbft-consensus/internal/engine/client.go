package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto/kzg4844"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"
)

// CallTimeout bounds every call. The Engine API spec (execution-apis,
// src/engine/paris.md) gives forkchoiceUpdated and newPayload 8 s and
// getPayload 1 s, but geth answers getPayload from memory and the time is in
// the transfer: a full block (up to 8 MiB since Osaka, EIP-7934) travels as
// twice as many bytes of hex, which takes most of a second to cross
// (BENCHMARKS-design.md). Timing getPayload out would drop a good block and
// rebuild it, forever.
const CallTimeout = 8 * time.Second

// Observer receives the latency and outcome of every call; the metrics
// package implements it. Outcome is "ok", a payload status, or an error kind.
type Observer interface {
	ObserveEngineCall(method, outcome string, d time.Duration)
}

// Payload is everything newPayload needs. The state package stores it for
// every finalized block so that a wiped geth can be rebuilt by replaying it.
type Payload struct {
	ExecutionPayload *engine.ExecutableData `json:"executionPayload"`
	VersionedHashes  []common.Hash          `json:"expectedBlobVersionedHashes"`
	BeaconRoot       common.Hash            `json:"parentBeaconBlockRoot"`
	Requests         []hexutil.Bytes        `json:"executionRequests"`
}

// Client talks to one geth over its authenticated endpoint.
type Client struct {
	url    string
	secret [32]byte
	now    func() time.Time
	dial   func(context.Context) (*rpc.Client, error)

	mu  sync.Mutex
	rpc *rpc.Client // over ws://, nil until the first call connects

	chain    *params.ChainConfig
	observer Observer
}

// Options configure Dial. Chain is the genesis config: its fork schedule
// picks the method versions.
type Options struct {
	URL      string
	Secret   [32]byte
	Chain    *params.ChainConfig
	Now      func() time.Time // token clock; time.Now when nil
	Observer Observer         // optional
}

// Dial prepares a client. It does not contact geth, so a CL can start
// before its geth: over HTTP connections are made per call; over ws:// the
// first call connects, and geth's client connects again by itself after a
// broken connection (a geth that restarted).
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	opts := []rpc.ClientOption{rpc.WithHTTPAuth(jwtAuth(o.Secret, o.Now))}
	overHTTP := strings.HasPrefix(o.URL, "http")
	if overHTTP {
		opts = append(opts, rpc.WithHTTPClient(&http.Client{Timeout: CallTimeout}))
	}
	c := &Client{url: o.URL, secret: o.Secret, now: o.Now, chain: o.Chain, observer: o.Observer}
	c.dial = func(ctx context.Context) (*rpc.Client, error) { return rpc.DialOptions(ctx, o.URL, opts...) }
	if overHTTP {
		rc, err := c.dial(ctx) // makes no connection
		if err != nil {
			return nil, fmt.Errorf("engine API %s: %w", o.URL, err)
		}
		c.rpc = rc
	}
	return c, nil
}

// conn returns the RPC client, connecting a ws:// client on first use.
func (c *Client) conn(ctx context.Context) (*rpc.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rpc == nil {
		rc, err := c.dial(ctx)
		if err != nil {
			return nil, err
		}
		c.rpc = rc
	}
	return c.rpc, nil
}

// Close releases the client's connections.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rpc != nil {
		c.rpc.Close()
	}
}

// call makes one call and reports it to the observer, with status (a
// payload status, when the caller knows one after decoding) as its outcome.
func (c *Client) call(ctx context.Context, timeout time.Duration, result any, method string, args ...any) error {
	return c.callWithStatus(ctx, timeout, result, func() string { return "ok" }, method, args...)
}

func (c *Client) callWithStatus(ctx context.Context, timeout time.Duration, result any, status func() string, method string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	rc, err := c.conn(ctx)
	if err == nil {
		err = rc.CallContext(ctx, result, method, args...)
	}
	outcome := ""
	if err != nil {
		err = explain(method, c.url, err)
		outcome = outcomeOf(err)
	} else {
		outcome = status()
	}
	c.observe(method, outcome, time.Since(start))
	return err
}

func (c *Client) observe(method, outcome string, d time.Duration) {
	if c.observer != nil {
		c.observer.ObserveEngineCall(method, outcome, d)
	}
}

func outcomeOf(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{{ErrUnreachable, "unreachable"}, {ErrJWTRejected, "jwt"}, {ErrJWTClockSkew, "jwt_clock"},
		{ErrUnsupportedFork, "unsupported_fork"}, {ErrUnknownPayload, "unknown_payload"}} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "error"
}

// ForkchoiceUpdated sets the head, safe and finalized blocks and, with
// attrs, starts building a payload on the head. headTime (the head block's
// timestamp) picks the method version when attrs is nil.
func (c *Client) ForkchoiceUpdated(ctx context.Context, fc engine.ForkchoiceStateV1, attrs *engine.PayloadAttributes, headTime uint64) (*engine.PayloadID, error) {
	ts := headTime
	if attrs != nil {
		ts = attrs.Timestamp
	}
	m, err := MethodsAt(c.chain, ts)
	if err != nil {
		return nil, err
	}
	var resp engine.ForkChoiceResponse
	status := func() string { return strings.ToLower(resp.PayloadStatus.Status) }
	if err := c.callWithStatus(ctx, CallTimeout, &resp, status, m.ForkchoiceUpdated, fc, attrs); err != nil {
		return nil, withFork(err, m, ts)
	}
	if err := checkStatus(m.ForkchoiceUpdated, resp.PayloadStatus); err != nil {
		return nil, err
	}
	return resp.PayloadID, nil
}

// GetPayload fetches the payload geth built for id (timestamp picks the
// version) and derives what newPayload needs from it: the EIP-4844 versioned
// hashes from the blob commitments and the EIP-7685 requests.
func (c *Client) GetPayload(ctx context.Context, id engine.PayloadID, timestamp uint64) (*Payload, error) {
	m, err := MethodsAt(c.chain, timestamp)
	if err != nil {
		return nil, err
	}
	var env engine.ExecutionPayloadEnvelope
	if err := c.call(ctx, CallTimeout, &env, m.GetPayload, id); err != nil {
		return nil, withFork(err, m, timestamp)
	}
	hashes, err := VersionedHashes(env.BlobsBundle)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.GetPayload, err)
	}
	requests := make([]hexutil.Bytes, len(env.Requests)) // [] rather than null when none
	for i, r := range env.Requests {
		requests[i] = r
	}
	return &Payload{ExecutionPayload: env.ExecutionPayload, VersionedHashes: hashes, Requests: requests}, nil
}

// NewPayload hands a payload to geth for execution. Only VALID returns nil.
func (c *Client) NewPayload(ctx context.Context, p *Payload) error {
	m, err := MethodsAt(c.chain, p.ExecutionPayload.Timestamp)
	if err != nil {
		return err
	}
	var status engine.PayloadStatusV1
	args := []any{p.ExecutionPayload}
	switch m.NewPayload {
	case "engine_newPayloadV3":
		args = append(args, p.VersionedHashes, p.BeaconRoot)
	case "engine_newPayloadV4":
		args = append(args, p.VersionedHashes, p.BeaconRoot, p.Requests)
	}
	outcome := func() string { return strings.ToLower(status.Status) }
	if err := c.callWithStatus(ctx, CallTimeout, &status, outcome, m.NewPayload, args...); err != nil {
		return withFork(err, m, p.ExecutionPayload.Timestamp)
	}
	return checkStatus(m.NewPayload, status)
}

// withFork adds, to an "Unsupported fork" answer, the fork the CL's genesis
// says is active at the payload's timestamp: the version came from it.
func withFork(err error, m Methods, timestamp uint64) error {
	if errors.Is(err, ErrUnsupportedFork) {
		return fmt.Errorf("%w; --genesis says fork %s at timestamp %d", err, m.Fork, timestamp)
	}
	return err
}

// CheckCapabilities asks geth (engine_exchangeCapabilities) whether it
// serves the three methods the fork schedule picks at timestamp, and names
// the first one it lacks.
func (c *Client) CheckCapabilities(ctx context.Context, timestamp uint64) error {
	m, err := MethodsAt(c.chain, timestamp)
	if err != nil {
		return err
	}
	want := []string{m.ForkchoiceUpdated, m.GetPayload, m.NewPayload}
	var theirs []string
	if err := c.call(ctx, CallTimeout, &theirs, "engine_exchangeCapabilities", want); err != nil {
		return err
	}
	for _, method := range want {
		if !slices.Contains(theirs, method) {
			return fmt.Errorf("geth does not offer %s, which fork %s needs: upgrade geth", method, m.Fork)
		}
	}
	return nil
}

// HeaderByNumber returns the canonical header at n, or the head when n is
// nil. A missing block is (nil, ethereum.NotFound).
func (c *Client) HeaderByNumber(ctx context.Context, n *big.Int) (*types.Header, error) {
	tag := "latest"
	if n != nil {
		tag = hexutil.EncodeBig(n)
	}
	var h *types.Header
	if err := c.call(ctx, CallTimeout, &h, "eth_getBlockByNumber", tag, false); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, ethereum.NotFound
	}
	return h, nil
}

// HeaderByHash returns the header of a block geth holds, canonical or not.
// A missing block is (nil, ethereum.NotFound).
func (c *Client) HeaderByHash(ctx context.Context, hash common.Hash) (*types.Header, error) {
	var h *types.Header
	if err := c.call(ctx, CallTimeout, &h, "eth_getBlockByHash", hash, false); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, ethereum.NotFound
	}
	return h, nil
}

// Logs returns the logs that address emitted with first topic topic in
// block hash (eth_getLogs with a blockHash filter: the block's receipts,
// canonical or not).
func (c *Client) Logs(ctx context.Context, hash common.Hash, address common.Address, topic common.Hash) ([]types.Log, error) {
	q := map[string]any{"blockHash": hash, "address": address, "topics": [][]common.Hash{{topic}}}
	var logs []types.Log
	if err := c.call(ctx, CallTimeout, &logs, "eth_getLogs", q); err != nil {
		return nil, err
	}
	return logs, nil
}

// PendingBlock is what geth would put in a block now.
type PendingBlock struct {
	Transactions []common.Hash  `json:"transactions"`
	GasUsed      hexutil.Uint64 `json:"gasUsed"`
}

// PendingBlock returns geth's pending block, which geth builds from its pool
// on request the way it fills a payload (and keeps for 2 s on one head).
func (c *Client) PendingBlock(ctx context.Context) (*PendingBlock, error) {
	var block *PendingBlock
	if err := c.call(ctx, CallTimeout, &block, "eth_getBlockByNumber", "pending", false); err != nil {
		return nil, err
	}
	if block == nil {
		return &PendingBlock{}, nil
	}
	return block, nil
}

// SubscribePendingTransactions streams the hashes of transactions entering
// geth's pool over a WebSocket on the same authenticated port. Unsubscribe
// also closes the connection.
func (c *Client) SubscribePendingTransactions(ctx context.Context, ch chan<- common.Hash) (ethereum.Subscription, error) {
	wsURL := "ws" + strings.TrimPrefix(strings.TrimPrefix(c.url, "http"), "ws")
	ws, err := rpc.DialOptions(ctx, wsURL, rpc.WithHTTPAuth(jwtAuth(c.secret, c.now)))
	if err != nil {
		return nil, explain("eth_subscribe", wsURL, err)
	}
	sub, err := ws.EthSubscribe(ctx, ch, "newPendingTransactions")
	if err != nil {
		ws.Close()
		return nil, explain("eth_subscribe", wsURL, err)
	}
	return wsSubscription{sub, ws}, nil
}

type wsSubscription struct {
	*rpc.ClientSubscription
	ws *rpc.Client
}

func (s wsSubscription) Unsubscribe() {
	s.ClientSubscription.Unsubscribe()
	s.ws.Close()
}

// VersionedHashes derives the EIP-4844 versioned hash of every blob in the
// bundle: sha256(commitment) with the first byte set to 0x01. The list is
// never nil: newPayload rejects null, and an empty list for a block that
// carries blobs is INVALID.
func VersionedHashes(b *engine.BlobsBundle) ([]common.Hash, error) {
	hashes := []common.Hash{}
	if b == nil {
		return hashes, nil
	}
	hasher := sha256.New()
	for i, raw := range b.Commitments {
		var commitment kzg4844.Commitment
		if len(raw) != len(commitment) {
			return nil, fmt.Errorf("blob commitment %d: %d bytes, want %d", i, len(raw), len(commitment))
		}
		copy(commitment[:], raw)
		hashes = append(hashes, kzg4844.CalcBlobHashV1(hasher, &commitment))
	}
	return hashes, nil
}
