package election

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/devnet"
)

// The lease against a real redis-server started by the devnet library.

func newRedis(t *testing.T) (*devnet.Redis, *redis.Client) {
	t.Helper()
	n := devnet.StartT(t, devnet.Config{Redis: true})
	rdb := redis.NewClient(&redis.Options{Addr: n.Redis.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return n.Redis, rdb
}

func candidate(t *testing.T, rdb *redis.Client, id string, ttl time.Duration) *Elector {
	t.Helper()
	e, err := New(rdb, Options{ID: id, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOneHolderAndFencedTakeover(t *testing.T) {
	_, rdb := newRedis(t)
	ctx := context.Background()
	a, b := candidate(t, rdb, "a", 300*time.Millisecond), candidate(t, rdb, "b", 300*time.Millisecond)

	la, ok, err := a.TryAcquire(ctx, 0)
	if err != nil || !ok || la.Epoch != 1 {
		t.Fatalf("a: %+v %v %v", la, ok, err)
	}
	if lb, ok, err := b.TryAcquire(ctx, 0); err != nil || ok || lb.Holder != "a" || lb.Epoch != 1 {
		t.Fatalf("b took a held lease: %+v %v %v", lb, ok, err)
	}
	if holder, epoch, ok, err := b.Current(ctx); err != nil || !ok || holder != "a" || epoch != 1 {
		t.Fatalf("current: %s %d %v %v", holder, epoch, ok, err)
	}
	// a stops renewing: after the TTL b takes over, with a higher epoch.
	var lb Lease
	eventually(t, func() bool {
		lb, ok, err = b.TryAcquire(ctx, 0)
		return err == nil && ok
	})
	if lb.Epoch != 2 {
		t.Fatalf("takeover epoch %d, want 2", lb.Epoch)
	}
	// a comes back: it can neither renew nor release b's lease.
	if _, err := a.Renew(ctx, la); !errors.Is(err, ErrLost) {
		t.Fatalf("stale renew: %v", err)
	}
	if err := a.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	if holder, _, _, _ := a.Current(ctx); holder != "b" {
		t.Fatalf("a's release removed b's lease: holder %q", holder)
	}
	// b renews and releases cleanly: the lease is free at once.
	if lb, err = b.Renew(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx, lb); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := a.Current(ctx); ok {
		t.Fatal("lease still held after release")
	}
	if la, ok, err = a.TryAcquire(ctx, 0); err != nil || !ok || la.Epoch != 3 {
		t.Fatalf("a after release: %+v %v %v", la, ok, err)
	}
}

// Redis restarted empty (no persistence): the counter starts over, and the
// floor the candidate passes (the store's newest epoch) keeps epochs rising.
func TestEpochFloorSurvivesRedisRestart(t *testing.T) {
	srv, rdb := newRedis(t)
	ctx := context.Background()
	a := candidate(t, rdb, "a", time.Second)
	for range 3 {
		l, ok, err := a.TryAcquire(ctx, 0)
		if err != nil || !ok {
			t.Fatal(err)
		}
		if err := a.Release(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.TryAcquire(ctx, 0); err == nil {
		t.Fatal("acquired with Redis down")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	l, ok, err := a.TryAcquire(ctx, 3)
	if err != nil || !ok || l.Epoch != 4 {
		t.Fatalf("after restart with floor 3: %+v %v %v; want epoch 4", l, ok, err)
	}
}

// Many candidates racing: exactly one wins.
func TestRaceHasOneWinner(t *testing.T) {
	_, rdb := newRedis(t)
	var (
		mu      sync.Mutex
		winners []string
		wg      sync.WaitGroup
	)
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		e := candidate(t, rdb, id, time.Second)
		wg.Go(func() {
			if _, ok, err := e.TryAcquire(context.Background(), 0); err == nil && ok {
				mu.Lock()
				winners = append(winners, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("winners: %v", winners)
	}
}

// The local deadline is earlier than Redis's expiry by the margin, measured
// from before the request.
func TestDeadlineHasMargin(t *testing.T) {
	_, rdb := newRedis(t)
	now := time.Now()
	e, err := New(rdb, Options{ID: "a", TTL: time.Second, Margin: 200 * time.Millisecond, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	l, ok, err := e.TryAcquire(context.Background(), 0)
	if err != nil || !ok {
		t.Fatal(err)
	}
	if want := now.Add(800 * time.Millisecond); !l.Deadline.Equal(want) {
		t.Fatalf("deadline %s, want %s", l.Deadline, want)
	}
	if !l.Valid(now.Add(799*time.Millisecond)) || l.Valid(now.Add(800*time.Millisecond)) {
		t.Fatal("Valid does not honour the deadline")
	}
	for _, bad := range []Options{{ID: "", TTL: time.Second}, {ID: "a|b", TTL: time.Second}, {ID: "a", TTL: time.Millisecond}, {ID: "a", TTL: time.Second, Margin: time.Second}} {
		if _, err := New(rdb, bad); err == nil {
			t.Errorf("options %+v accepted", bad)
		}
	}
}

// Two processes with one instance id: the second (another run) neither
// shares the first's lease nor its directory entry, and takes them only
// once the first stops refreshing them.
func TestOneIDTwoProcesses(t *testing.T) {
	_, rdb := newRedis(t)
	ctx := context.Background()
	first, second := candidate(t, rdb, "a", 300*time.Millisecond), candidate(t, rdb, "a", 300*time.Millisecond)
	if first.Run() == second.Run() {
		t.Fatalf("two electors drew one run id %s", first.Run())
	}
	l1, ok, err := first.TryAcquire(ctx, 0)
	if err != nil || !ok {
		t.Fatalf("first: %+v %v %v", l1, ok, err)
	}
	if l2, ok, err := second.TryAcquire(ctx, 0); err != nil || ok {
		t.Fatalf("the second process shares the first's lease: %+v %v %v", l2, ok, err)
	}
	if _, err := second.Renew(ctx, Lease{Holder: "a", Run: second.Run(), Epoch: l1.Epoch}); !errors.Is(err, ErrLost) {
		t.Fatalf("the second process renewed the first's lease: %v", err)
	}

	const dirTTL = 300 * time.Millisecond
	if err := Announce(ctx, rdb, "", "a", first.Run(), "http://one", dirTTL); err != nil {
		t.Fatal(err)
	}
	err = Announce(ctx, rdb, "", "a", second.Run(), "http://two", dirTTL)
	if !errors.Is(err, ErrIDInUse) || !strings.Contains(err.Error(), "http://one") || !strings.Contains(err.Error(), "--instance-id") {
		t.Fatalf("second announcement: %v", err)
	}
	if u, err := URL(ctx, rdb, "", "a"); err != nil || u != "http://one" {
		t.Fatalf("directory: %q %v", u, err)
	}
	// The first stops (crashed, or this is a restart): both expire, the
	// second takes them, with a new epoch.
	eventually(t, func() bool { return Announce(ctx, rdb, "", "a", second.Run(), "http://two", dirTTL) == nil })
	if u, err := URL(ctx, rdb, "", "a"); err != nil || u != "http://two" {
		t.Fatalf("directory: %q %v", u, err)
	}
	var l2 Lease
	eventually(t, func() bool { l2, ok, err = second.TryAcquire(ctx, 0); return err == nil && ok })
	if l2.Epoch <= l1.Epoch || l2.Run != second.Run() {
		t.Fatalf("second run's lease %+v after %+v", l2, l1)
	}
}
