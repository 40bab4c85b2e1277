// Package election is the leader lease: a key in Redis that one candidate
// holds at a time for a TTL, and a fencing epoch that grows with every new
// holder. Every operation is one Lua script, so Redis runs it atomically.
//
// The lease alone cannot stop a leader that was paused past its TTL from
// acting: it does not know it lost. Two things close that gap. The holder
// keeps a local deadline on the monotonic clock, taken before its request is
// sent and shortened by a margin, and stops producing when it passes. And
// the block store refuses writes from an epoch older than the newest it has
// seen (the fencing token), so a stale leader that acts anyway is rejected.
package election

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLost means the lease is no longer ours: it expired and, perhaps,
// another candidate holds it.
var ErrLost = errors.New("lease lost")

// Lease is a held lease.
type Lease struct {
	Holder string // the candidate's --instance-id
	// Run tells apart two processes started with one instance id: each
	// draws its own at start. The lease, the node directory and the store's
	// epoch claims hold it, so that a second process under the same id is
	// never taken for the first.
	Run   string
	Epoch uint64
	// Deadline is when the holder must stop acting as leader unless it
	// renewed: request time + TTL - margin, on the monotonic clock.
	Deadline time.Time
}

// Valid reports whether the lease may still be used at now.
func (l Lease) Valid(now time.Time) bool { return now.Before(l.Deadline) }

func (l Lease) value() string {
	return l.Holder + "|" + strconv.FormatUint(l.Epoch, 10) + "|" + l.Run
}

// Elector runs the lease operations for one candidate.
type Elector struct {
	rdb      redis.UniversalClient
	prefix   string
	key      string // the lease: "<id>|<epoch>" with a TTL
	epochKey string // the fencing counter
	id       string
	run      string
	ttl      time.Duration
	margin   time.Duration
	now      func() time.Time
}

// Options configure an Elector.
type Options struct {
	Prefix string        // key prefix; default "consensus"
	ID     string        // this candidate
	Run    string        // this process; default NewRun()
	TTL    time.Duration // lease length
	Margin time.Duration // safety margin off the local deadline; default TTL/5
	Now    func() time.Time
}

// New returns an Elector for candidate o.ID.
func New(rdb redis.UniversalClient, o Options) (*Elector, error) {
	if o.ID == "" || strings.Contains(o.ID, "|") {
		return nil, fmt.Errorf("election: candidate id %q must be non-empty and contain no '|'", o.ID)
	}
	if o.TTL < 10*time.Millisecond {
		return nil, fmt.Errorf("election: lease TTL %s too short", o.TTL)
	}
	o.Prefix = keyPrefix(o.Prefix)
	if o.Margin == 0 {
		o.Margin = o.TTL / 5
	}
	if o.Margin >= o.TTL {
		return nil, fmt.Errorf("election: margin %s must be below the TTL %s", o.Margin, o.TTL)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Run == "" {
		o.Run = NewRun()
	}
	return &Elector{rdb: rdb, prefix: o.Prefix, key: o.Prefix + ":leader", epochKey: o.Prefix + ":epoch",
		id: o.ID, run: o.Run, ttl: o.TTL, margin: o.Margin, now: o.Now}, nil
}

// NewRun draws a process's run id: 8 random bytes in hex.
func NewRun() string {
	b := make([]byte, 8)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// Run is this process's run id.
func (e *Elector) Run() string { return e.run }

// acquire takes the lease if nobody holds it, with an epoch above both the
// counter and the caller's floor (the newest epoch the block store has seen:
// Redis may have restarted empty). It answers {1, epoch} when taken or
// already ours (same holder and run), {0, epoch, holder} when another
// process holds it: another candidate, or an earlier run of this one (it
// may be paused, not dead, so it is waited out like any other).
var acquire = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, epoch, run = string.match(cur, '^(.*)|(%d+)|(.*)$')
  if holder == ARGV[1] and run == ARGV[4] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, epoch}
  end
  return {0, epoch or '0', holder or cur}
end
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch .. '|' .. ARGV[4], 'NX', 'PX', ARGV[2])
return {1, tostring(epoch)}
`)

// renew extends the lease only if it is still exactly ours (holder and epoch).
var renew = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// release deletes the lease only if it is still ours.
var release = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// TryAcquire takes the lease if it is free (or already ours). It returns
// the lease and true when we hold it, or the current holder's lease and false.
func (e *Elector) TryAcquire(ctx context.Context, floor uint64) (Lease, bool, error) {
	sent := e.now()
	res, err := acquire.Run(ctx, e.rdb, []string{e.key, e.epochKey}, e.id, e.ttl.Milliseconds(), floor, e.run).Slice()
	if err != nil {
		return Lease{}, false, fmt.Errorf("acquire lease: %w", err)
	}
	epoch, err := strconv.ParseUint(fmt.Sprint(res[1]), 10, 64)
	if err != nil {
		return Lease{}, false, fmt.Errorf("acquire lease: epoch %v: %w", res[1], err)
	}
	if res[0].(int64) == 1 {
		return Lease{Holder: e.id, Run: e.run, Epoch: epoch, Deadline: sent.Add(e.ttl - e.margin)}, true, nil
	}
	return Lease{Holder: fmt.Sprint(res[2]), Epoch: epoch}, false, nil
}

// Renew extends a held lease and moves its deadline; ErrLost when it is
// no longer ours.
func (e *Elector) Renew(ctx context.Context, l Lease) (Lease, error) {
	sent := e.now()
	ok, err := renew.Run(ctx, e.rdb, []string{e.key}, l.value(), e.ttl.Milliseconds()).Int()
	if err != nil {
		return l, fmt.Errorf("renew lease: %w", err)
	}
	if ok != 1 {
		return l, fmt.Errorf("epoch %d: %w", l.Epoch, ErrLost)
	}
	l.Deadline = sent.Add(e.ttl - e.margin)
	return l, nil
}

// Release gives the lease up if it is still ours (a clean shutdown), so the
// next leader need not wait for the TTL.
func (e *Elector) Release(ctx context.Context, l Lease) error {
	if _, err := release.Run(ctx, e.rdb, []string{e.key}, l.value()).Int(); err != nil {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}

// Current returns who holds the lease, for members looking for the leader.
func (e *Elector) Current(ctx context.Context) (holder string, epoch uint64, ok bool, err error) {
	return Current(ctx, e.rdb, e.prefix)
}

// Current returns who holds the lease under prefix ("" = "consensus").
func Current(ctx context.Context, rdb redis.UniversalClient, prefix string) (holder string, epoch uint64, ok bool, err error) {
	v, err := rdb.Get(ctx, keyPrefix(prefix)+":leader").Result()
	if errors.Is(err, redis.Nil) {
		return "", 0, false, nil
	}
	if err != nil {
		return "", 0, false, err
	}
	parts := strings.Split(v, "|")
	if len(parts) != 3 {
		return "", 0, false, fmt.Errorf("lease value %q: not holder|epoch|run", v)
	}
	holder = parts[0]
	epoch, err = strconv.ParseUint(parts[1], 10, 64)
	return holder, epoch, err == nil, err
}

// The node directory: every node announces the URL of its HTTP API under
// <prefix>:node:<id> with a TTL, so that members find the leader's API from
// the lease holder's id, and a node that died drops out by itself. The
// entry also names the announcing process's run, so that a second process
// started with the same id is refused rather than mixed up with the first.

// ErrIDInUse means another process announces itself under this id.
var ErrIDInUse = errors.New("instance id in use by another process")

// announce sets the entry "run|url" unless another run holds it; it
// answers nil when set, the other run's entry otherwise.
var announce = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return false
`)

// Announce records id's API URL for ttl, for process run. ErrIDInUse when
// another process holds the entry: a live duplicate keeps refreshing it,
// a restarted node's earlier run lets it expire within ttl.
func Announce(ctx context.Context, rdb redis.UniversalClient, prefix, id, run, url string, ttl time.Duration) error {
	cur, err := announce.Run(ctx, rdb, []string{keyPrefix(prefix) + ":node:" + id}, run, url, ttl.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("announce %s: %w", id, err)
	}
	other, otherURL, _ := strings.Cut(cur, "|")
	return fmt.Errorf("%w: %q is announced by run %s at %s (this is run %s): give every process its own --instance-id",
		ErrIDInUse, id, other, otherURL, run)
}

// ErrUnknownNode means a node has not announced its URL (or it expired).
var ErrUnknownNode = errors.New("node not in the directory")

// URL returns the API URL node id announced.
func URL(ctx context.Context, rdb redis.UniversalClient, prefix, id string) (string, error) {
	v, err := rdb.Get(ctx, keyPrefix(prefix)+":node:"+id).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("%s: %w", id, ErrUnknownNode)
	}
	if err != nil {
		return "", err
	}
	_, u, found := strings.Cut(v, "|")
	if !found {
		return "", fmt.Errorf("directory entry of %s %q: not run|url", id, v)
	}
	return u, nil
}

func keyPrefix(p string) string {
	if p == "" {
		return "consensus"
	}
	return p
}
