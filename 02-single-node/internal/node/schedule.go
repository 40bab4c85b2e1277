package node

import "time"

// schedule says when the next block is due besides pending transactions:
// every BlockTime in block-time mode (a block per slot, empty or not); on
// demand, an idle heartbeat after MaxIdle (none when zero).
type schedule struct {
	mode      Mode
	blockTime time.Duration
	maxIdle   time.Duration
	now       func() time.Time
	timer     *time.Timer // nil: only transactions make blocks
	next      time.Time   // block-time mode: when the next slot starts
}

func newSchedule(o Options) *schedule {
	s := &schedule{mode: o.Mode, blockTime: o.BlockTime, maxIdle: o.MaxIdle, now: o.Now, next: o.Now()}
	if s.mode == ModeBlockTime {
		s.timer = time.NewTimer(0)
	} else if s.maxIdle > 0 {
		s.timer = time.NewTimer(s.maxIdle)
	}
	return s
}

// C fires when a block is due without transactions (nil: never).
func (s *schedule) C() <-chan time.Time {
	if s.timer == nil {
		return nil
	}
	return s.timer.C
}

// slotBegun reports, in block-time mode, whether the next slot has begun.
func (s *schedule) slotBegun() bool { return !s.now().Before(s.next) }

// made restarts the timer after a block made in the slot that began at
// slot: the next slot, or MaxIdle more without a block.
func (s *schedule) made(slot time.Time) {
	if s.timer == nil {
		return
	}
	s.timer.Stop()
	wait := s.maxIdle
	if s.mode == ModeBlockTime {
		s.next = slot.Add(s.blockTime)
		wait = max(0, s.next.Sub(s.now()))
	}
	s.timer.Reset(wait)
}

func (s *schedule) stop() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

// parkedRecheck looks at parked transactions again after 100 ms, then ever
// more rarely while some stay parked: a phantom costs one build now and
// then, never a loop.
type parkedRecheck struct {
	timer   *time.Timer
	armed   bool
	backoff *backoff
}

func newParkedRecheck() *parkedRecheck {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &parkedRecheck{timer: t, backoff: newBackoff(100*time.Millisecond, 5*time.Second)}
}

// C fires when the parked transactions are due for another look; fired
// must be called then.
func (r *parkedRecheck) C() <-chan time.Time { return r.timer.C }

func (r *parkedRecheck) fired() { r.armed = false }

// after arms the next look once a block left parked transactions parked,
// and starts again from 100 ms once none are.
func (r *parkedRecheck) after(parked int) {
	switch {
	case parked == 0:
		r.backoff.reset()
	case !r.armed:
		r.timer.Reset(r.backoff.take())
		r.armed = true
	}
}

func (r *parkedRecheck) stop() { r.timer.Stop() }
