package node

import (
	"context"
	"errors"
	"time"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
)

// errorKinds name the errors gethcl_errors_total counts by kind; any other
// is "other". metrics.ErrorKinds lists them all.
var errorKinds = []struct {
	err  error
	kind string
}{{errNoQuorum, "quorum"}, {errUnavailable, "unavailable"}, {engine.ErrUnreachable, "unreachable"}, {engine.ErrSyncing, "syncing"}, {engine.ErrAccepted, "accepted"},
	{engine.ErrUnknownPayload, "unknown_payload"}, {engine.ErrJWTClockSkew, "jwt_clock_skew"}}

func errorKind(err error) string {
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	return "other"
}

// sleep waits d or until ctx ends; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff doubles from min to max.
type backoff struct{ min, max, cur time.Duration }

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }
func (b *backoff) next() time.Duration           { return b.cur }
func (b *backoff) reset()                        { b.cur = b.min }
func (b *backoff) take() time.Duration {
	d := b.cur
	b.cur = min(b.max, 2*b.cur)
	return d
}
