// Package notify tells members at once that the leader committed a block:
// one Redis pub/sub channel, one small message per block.
//
// Pub/sub keeps nothing for a subscriber that is away, and that is on
// purpose: the message only says "there is news"; members fetch the blocks
// themselves from the block API, from their own head onwards, so a missed
// message delays a member until the next one and never loses a block. A
// capped stream would keep the same guarantee at more cost; an unbounded one
// would grow for ever.
package notify

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ethereum/go-ethereum/common"
	"github.com/redis/go-redis/v9"
)

// Notice announces a committed block.
type Notice struct {
	Number uint64      `json:"number"`
	Hash   common.Hash `json:"hash"`
	Epoch  uint64      `json:"epoch"`
	Leader string      `json:"leader"`
}

// Channel is the pub/sub channel name under a key prefix.
func Channel(prefix string) string {
	if prefix == "" {
		prefix = "consensus"
	}
	return prefix + ":blocks"
}

// Publish announces n. It returns how many subscribers received it.
func Publish(ctx context.Context, rdb redis.UniversalClient, channel string, n Notice) (int64, error) {
	b, err := json.Marshal(n)
	if err != nil {
		return 0, err
	}
	got, err := rdb.Publish(ctx, channel, b).Result()
	if err != nil {
		return 0, fmt.Errorf("publish block %d: %w", n.Number, err)
	}
	return got, nil
}

// Subscribe delivers notices until ctx ends. go-redis reconnects and
// re-subscribes by itself after a connection loss; malformed messages are
// passed to bad (which may be nil) and dropped.
func Subscribe(ctx context.Context, rdb redis.UniversalClient, channel string, bad func(payload string, err error)) (<-chan Notice, error) {
	ps := rdb.Subscribe(ctx, channel)
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		ps.Close()
		return nil, fmt.Errorf("subscribe %s: %w", channel, err)
	}
	out := make(chan Notice, 64)
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
				var n Notice
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
