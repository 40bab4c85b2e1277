package node

import (
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// pendingSet tracks the transactions geth announced (newPendingTransactions)
// that no produced block has included yet. Its size sets the build wait, and
// a non-empty set makes an empty payload a miss worth rebuilding rather than
// a block to publish.
//
// The set must not hold transactions the pool cannot offer the miner: each
// one makes every empty payload look like a miss, so the node builds without
// pause and the learnt build wait climbs. Two kinds are kept out:
//
//   - late announcements: geth's miner can take a transaction from the pool
//     before the notification of it has crossed the websocket, so the block
//     that includes it may be applied first. Hashes included recently are
//     remembered and their announcements ignored.
//   - transactions a whole round of builds did not include (replaced,
//     evicted, priced out) are parked: not counted, looked at again with
//     backoff (recheck), forgotten after pendingTTL.
type pendingSet struct {
	mu      sync.Mutex
	txs     map[common.Hash]time.Time // announced, not yet included: counted
	parked  map[common.Hash]time.Time // announced, not included by a whole round
	unknown bool                      // the pool may hold transactions we were not told about

	// included hashes of the current and the previous lateWindow
	done, doneBefore map[common.Hash]struct{}
	doneSince        time.Time

	lastTrim time.Time
	wake     chan struct{} // signalled on every change that may start a block
}

const (
	// Announced transactions that never show up in a block are forgotten
	// after this long.
	pendingTTL = 2 * time.Minute
	// An included transaction's announcement is recognised as late for one
	// to two windows after the block.
	lateWindow = 10 * time.Second
)

func newPendingSet() *pendingSet {
	return &pendingSet{txs: make(map[common.Hash]time.Time), parked: make(map[common.Hash]time.Time),
		done: make(map[common.Hash]struct{}), doneBefore: make(map[common.Hash]struct{}), wake: make(chan struct{}, 1)}
}

func (p *pendingSet) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// add records an announced transaction. It reports false, and changes
// nothing, for a transaction a block already included.
func (p *pendingSet) add(h common.Hash, now time.Time) bool {
	p.mu.Lock()
	_, late := p.done[h]
	if _, before := p.doneBefore[h]; before {
		late = true
	}
	if !late {
		p.txs[h] = now
		delete(p.parked, h)
	}
	p.trim(now) // a node that makes or applies no block still forgets
	p.mu.Unlock()
	if !late {
		p.signal()
	}
	return !late
}

// markUnknown says the pool's content is unknown (at start-up, after a
// reconnection): the next build is attempted even with an empty set.
func (p *pendingSet) markUnknown() {
	p.mu.Lock()
	p.unknown = true
	p.mu.Unlock()
	p.signal()
}

// count returns how many announced transactions are not yet included, and
// whether the pool may hold others.
func (p *pendingSet) count() (n int, unknown bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.txs), p.unknown
}

// included removes a block's transactions (raw encodings: the hash of each
// is its transaction hash), remembers them to recognise late announcements,
// and forgets stale entries.
func (p *pendingSet) included(raw [][]byte, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unknown = false
	if now.Sub(p.doneSince) > lateWindow {
		p.doneBefore, p.done, p.doneSince = p.done, make(map[common.Hash]struct{}, len(p.done)), now
	}
	for _, tx := range raw {
		h := crypto.Keccak256Hash(tx)
		delete(p.txs, h)
		delete(p.parked, h)
		p.done[h] = struct{}{}
	}
	p.trim(now)
}

// trim forgets, every pendingTTL/4, the entries announced over pendingTTL ago.
func (p *pendingSet) trim(now time.Time) {
	if now.Sub(p.lastTrim) <= pendingTTL/4 {
		return
	}
	p.lastTrim = now
	for _, set := range []map[common.Hash]time.Time{p.txs, p.parked} {
		for h, seen := range set {
			if now.Sub(seen) > pendingTTL {
				delete(set, h)
			}
		}
	}
}

// settle ends a round of builds that included nothing: the pool's content
// is known again, and the transactions announced before the round's last
// build started are parked (the pool offered them to the miner and it took
// none). Those announced later stay counted.
func (p *pendingSet) settle(lastBuild time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unknown = false
	for h, seen := range p.txs {
		if seen.Before(lastBuild) {
			p.parked[h] = seen
			delete(p.txs, h)
		}
	}
	p.trim(lastBuild)
}

// tracked returns how many hashes the set holds, all maps together.
func (p *pendingSet) tracked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.txs) + len(p.parked) + len(p.done) + len(p.doneBefore)
}

// parkedCount returns how many announced transactions are parked.
func (p *pendingSet) parkedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// recheck asks for one more build when transactions are parked (a priced-out
// transaction may fit a lower base fee, a slow pool may have caught up).
func (p *pendingSet) recheck() {
	p.mu.Lock()
	parked := len(p.parked) > 0
	if parked {
		p.unknown = true
	}
	p.mu.Unlock()
	if parked {
		p.signal()
	}
}
