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
type pendingSet struct {
	mu       sync.Mutex
	txs      map[common.Hash]time.Time
	unknown  bool // the pool may hold transactions we were not told about
	lastTrim time.Time
	wake     chan struct{} // signalled on every change that may start a block
}

// Transactions that stay announced but never show up in a block (replaced,
// evicted, underpriced) are forgotten after this long.
const pendingTTL = 2 * time.Minute

func newPendingSet() *pendingSet {
	return &pendingSet{txs: make(map[common.Hash]time.Time), wake: make(chan struct{}, 1)}
}

func (p *pendingSet) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// add records an announced transaction.
func (p *pendingSet) add(h common.Hash, now time.Time) {
	p.mu.Lock()
	p.txs[h] = now
	p.mu.Unlock()
	p.signal()
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
// is its transaction hash) and forgets stale entries.
func (p *pendingSet) included(raw [][]byte, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unknown = false
	for _, tx := range raw {
		delete(p.txs, crypto.Keccak256Hash(tx))
	}
	if now.Sub(p.lastTrim) > pendingTTL/4 {
		p.lastTrim = now
		for h, seen := range p.txs {
			if now.Sub(seen) > pendingTTL {
				delete(p.txs, h)
			}
		}
	}
}

// attempted clears the unknown flag after a build found nothing to include.
func (p *pendingSet) attempted() {
	p.mu.Lock()
	p.unknown = false
	p.mu.Unlock()
}
