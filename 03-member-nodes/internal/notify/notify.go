// Package notify tells members at once that the leader committed a block:
// one Redis pub/sub channel, one message per block.
//
// Pub/sub keeps nothing for a subscriber that is away, and that is on
// purpose: a notice is a shortcut, not the record. It carries the block
// itself when the block is small, so that a member at the head applies it
// without a round trip; members fetch anything else (a big block, a gap
// after a missed notice or downtime) from the block API, from their own
// head onwards, so a missed message delays a member until the next one and
// never loses a block. Members verify a block the same way whichever path
// brought it. A capped stream would keep the same guarantee at more cost;
// an unbounded one would grow for ever.
package notify

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/redis/go-redis/v9"
)

// Notice announces a committed block, or, when Proposed, a block the
// leader built and is about to commit.
type Notice struct {
	Number uint64      `json:"number"`
	Hash   common.Hash `json:"hash"`
	Epoch  uint64      `json:"epoch"`
	Leader string      `json:"leader"`
	// Block is the signed block in the block API's encoding, or empty
	// when it was too big to inline (MaxInline). A proposed block is
	// signed in the proposal domain (signer.Header.Proposal).
	Block json.RawMessage `json:"block,omitempty"`
	// Proposed: not final, maybe never. Followers may execute it ahead
	// (newPayload), while the leader commits it, and never make it their
	// head on this notice's word: only a committed block's notice, or the
	// block API, brings a block they verify and make final.
	Proposed bool `json:"proposed,omitempty"`
}

// MaxInline bounds a block carried inside a notice. Redis copies every
// message to every subscriber's output buffer (pub/sub clients are cut off
// past 8 MB for 60 s by default); a bigger block is announced without its
// body and fetched.
const MaxInline = 256 << 10

// Cosignature is a co-signer's signature of a proposed block (signer.Cosign),
// sent to the leader. The signature authenticates it: the leader counts it
// only if it recovers to a listed co-signer over the block it proposed.
type Cosignature struct {
	Number    uint64         `json:"number"`
	Hash      common.Hash    `json:"hash"`
	Epoch     uint64         `json:"epoch"`
	Signer    common.Address `json:"signer"`
	Signature hexutil.Bytes  `json:"signature"`
}

// Channel is the pub/sub channel of block notices under a key prefix.
func Channel(prefix string) string { return channel(prefix, "blocks") }

// CosignChannel is the pub/sub channel of co-signatures under a key prefix.
func CosignChannel(prefix string) string { return channel(prefix, "cosignatures") }

func channel(prefix, name string) string {
	if prefix == "" {
		prefix = "consensus"
	}
	return prefix + ":" + name
}

// Publish sends m (a Notice or a Cosignature). It returns how many
// subscribers received it.
func Publish[M Notice | Cosignature](ctx context.Context, rdb redis.UniversalClient, channel string, m M) (int64, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	got, err := rdb.Publish(ctx, channel, b).Result()
	if err != nil {
		return 0, fmt.Errorf("publish to %s: %w", channel, err)
	}
	return got, nil
}

// Subscribe delivers messages until ctx ends. go-redis reconnects and
// re-subscribes by itself after a connection loss; malformed messages are
// passed to bad (which may be nil) and dropped.
func Subscribe[M Notice | Cosignature](ctx context.Context, rdb redis.UniversalClient, channel string, bad func(payload string, err error)) (<-chan M, error) {
	ps := rdb.Subscribe(ctx, channel)
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		ps.Close()
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	out := make(chan M, 64)
	go func() {
		defer close(out)
		defer ps.Close()
		msgs := ps.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				var n M
				if err := json.Unmarshal([]byte(m.Payload), &n); err != nil {
					if bad != nil {
						bad(m.Payload, err)
					}
					continue
				}
				select {
				case out <- n:
				default: // a slow reader: it will fetch from its head anyway
				}
			}
		}
	}()
	return out, nil
}
