// Package state is the StateManager: the consensus layer's own durable
// record of the chain it finalized. It keeps the head (number, hash,
// timestamp) and the full payload of every block the CL finalized, so that a
// geth that lost its datadir can be rebuilt by replaying them.
//
// Storage is bbolt (go.etcd.io/bbolt, the store under etcd): one file, a
// B+tree, and every Update is an ACID transaction that is fsynced before it
// returns. The CL persists a block before it tells geth the block is final
// (see the node package), so a SIGKILL at any instant leaves the store at or
// ahead of geth, never behind it, and never disagreeing.
//
// Why not files with rename: the head and the payload must change together,
// which is one transaction here and a two-file protocol there. Why not
// pebble: its strength is write throughput on large datasets, while this
// store writes one small record per block and reads almost never.
package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ethereum/go-ethereum/common"
	bolt "go.etcd.io/bbolt"

	"github.com/geth-consensus/tutorial/02-single-node/internal/engine"
)

var (
	bucketMeta     = []byte("meta")
	bucketPayloads = []byte("payloads") // big-endian number → JSON engine.Payload
	keyHead        = []byte("head")
	keyGenesis     = []byte("genesis")
)

// ErrNoPayload means the store holds no payload for a block number (blocks
// adopted from geth, or below the store's first block).
var ErrNoPayload = errors.New("no stored payload")

// Head is the last block the CL finalized.
type Head struct {
	Number    uint64      `json:"number"`
	Hash      common.Hash `json:"hash"`
	Timestamp uint64      `json:"timestamp"`
}

// Manager is the StateManager. It is safe for concurrent use.
type Manager struct {
	db *bolt.DB
}

// Open opens (or creates) the store in dir/state.db.
func Open(dir string) (*Manager, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, "state.db")
	// The timeout turns "another process holds the file" into an error
	// instead of a hang: two CLs on one store would fork the chain.
	// NoFreelistSync skips writing the free-page list on every commit (one
	// page less per block); bbolt rebuilds it by scanning the file at open.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open %s (is another instance running on this --data-dir?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketPayloads} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Manager{db: db}, nil
}

// Close closes the store.
func (m *Manager) Close() error { return m.db.Close() }

// Head returns the finalized head, or ok=false for an empty store.
func (m *Manager) Head() (h Head, ok bool, err error) {
	err = m.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketMeta).Get(keyHead)
		if raw == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(raw, &h)
	})
	return h, ok, err
}

// Init records the chain's genesis and sets it as the head of an empty
// store. It refuses a store created for another chain.
func (m *Manager) Init(genesis Head) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if raw := meta.Get(keyGenesis); raw != nil {
			if have := common.BytesToHash(raw); have != genesis.Hash {
				return fmt.Errorf("the store was created for genesis %s, geth runs genesis %s: use another --data-dir", have, genesis.Hash)
			}
			return nil
		}
		if err := meta.Put(keyGenesis, genesis.Hash.Bytes()); err != nil {
			return err
		}
		return putHead(meta, genesis)
	})
}

// Commit stores a finalized block's payload and makes it the head, in one
// fsynced transaction. The block must extend the current head.
func (m *Manager) Commit(p *engine.Payload) error {
	data := p.ExecutionPayload
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return m.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var head Head
		if err := json.Unmarshal(meta.Get(keyHead), &head); err != nil {
			return fmt.Errorf("read head: %w", err)
		}
		if data.Number != head.Number+1 || data.ParentHash != head.Hash {
			return fmt.Errorf("block %d (parent %s) does not extend the stored head %d %s", data.Number, data.ParentHash, head.Number, head.Hash)
		}
		if err := tx.Bucket(bucketPayloads).Put(key(data.Number), raw); err != nil {
			return err
		}
		return putHead(meta, Head{Number: data.Number, Hash: data.BlockHash, Timestamp: data.Timestamp})
	})
}

// Rollback takes back the head block, which geth rejected after it was
// stored and before it was made final anywhere: its payload is deleted and
// parent is the head again.
func (m *Manager) Rollback(block, parent Head) error {
	return m.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var head Head
		if err := json.Unmarshal(meta.Get(keyHead), &head); err != nil {
			return fmt.Errorf("read head: %w", err)
		}
		if head.Hash != block.Hash || block.Number != parent.Number+1 {
			return fmt.Errorf("roll back block %d %s: the stored head is %d %s", block.Number, block.Hash, head.Number, head.Hash)
		}
		if err := tx.Bucket(bucketPayloads).Delete(key(block.Number)); err != nil {
			return err
		}
		return putHead(meta, parent)
	})
}

// Adopt sets the head to a block the store has no payload for: geth's
// canonical head when the CL's state was lost and geth is ahead of it.
func (m *Manager) Adopt(h Head) error {
	return m.db.Update(func(tx *bolt.Tx) error { return putHead(tx.Bucket(bucketMeta), h) })
}

// Payload returns the stored payload of block n.
func (m *Manager) Payload(n uint64) (*engine.Payload, error) {
	var p engine.Payload
	err := m.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketPayloads).Get(key(n))
		if raw == nil {
			return fmt.Errorf("block %d: %w", n, ErrNoPayload)
		}
		return json.Unmarshal(raw, &p)
	})
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// HashAt returns the stored hash of block n (the head's, or a payload's).
func (m *Manager) HashAt(n uint64) (common.Hash, error) {
	if h, ok, err := m.Head(); err != nil || (ok && h.Number == n) {
		return h.Hash, err
	}
	p, err := m.Payload(n)
	if err != nil {
		return common.Hash{}, err
	}
	return p.ExecutionPayload.BlockHash, nil
}

func putHead(meta *bolt.Bucket, h Head) error {
	raw, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return meta.Put(keyHead, raw)
}

func key(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
