package notify

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/geth-consensus/tutorial/devnet"
	"github.com/redis/go-redis/v9"
)

func TestPublishSubscribeAcrossRedisRestart(t *testing.T) {
	n := devnet.StartT(t, devnet.Config{Redis: true})
	rdb := redis.NewClient(&redis.Options{Addr: n.Redis.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := Channel("")
	badSeen := make(chan string, 1)
	notices, err := Subscribe[Notice](ctx, rdb, ch, func(p string, _ error) { badSeen <- p })
	if err != nil {
		t.Fatal(err)
	}
	want := Notice{Number: 7, Hash: common.HexToHash("0x07"), Epoch: 2, Leader: "leader-1", Block: json.RawMessage(`{"number":"0x7"}`)}
	if got, err := Publish(ctx, rdb, ch, want); err != nil || got != 1 {
		t.Fatalf("publish: %d receivers, %v", got, err)
	}
	if got := receive(t, notices); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	if err := rdb.Publish(ctx, ch, "not json").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-badSeen:
		if p != "not json" {
			t.Fatalf("bad payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("malformed message not reported")
	}

	// Redis restarts: the subscriber comes back by itself. Poll: publish
	// until the re-subscribed reader receives.
	if err := n.Redis.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := n.Redis.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n.Redis.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	again := Notice{Number: 8, Hash: common.HexToHash("0x08"), Epoch: 3, Leader: "leader-2"}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if got, err := Publish(ctx, rdb, ch, again); err == nil && got == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscriber did not come back after the Redis restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := receive(t, notices); !reflect.DeepEqual(got, again) {
		t.Fatalf("after restart got %+v", got)
	}
}

func receive(t *testing.T, c <-chan Notice) Notice {
	t.Helper()
	select {
	case n := <-c:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no notice within 5s")
		return Notice{}
	}
}
