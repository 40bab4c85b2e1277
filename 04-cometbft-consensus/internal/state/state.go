// Package state is the app's persistent state: the last committed height,
// its app hash and the execution head, in one small JSON file replaced
// atomically at every Commit (write a temporary file, fsync, rename, fsync
// the directory). The blocks themselves are in CometBFT's block store; this
// file only says how far the app got, for CometBFT's handshake.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// Head is an execution block.
type Head struct {
	Number    uint64      `json:"number"`
	Hash      common.Hash `json:"hash"`
	Timestamp uint64      `json:"timestamp"`
}

// State is what the app has committed.
type State struct {
	// Height is the last CometBFT height committed; its execution block is
	// Head (Head.Number == Height: one execution block per height).
	Height int64 `json:"height"`
	Head   Head  `json:"head"`
	// LastBlockHash is CometBFT's hash of block Height: the next block's
	// parentBeaconBlockRoot and prevRandao source.
	LastBlockHash hexutil.Bytes `json:"lastBlockHash"`
}

// AppHash is the app hash CometBFT records for the state: the execution
// block hash, so that agreeing on the app hash is agreeing on geth's block.
func (s State) AppHash() []byte { return s.Head.Hash.Bytes() }

// Load reads the state file; a missing file is the zero state.
func Load(path string) (State, error) {
	var s State
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("app state %s is corrupt: %w", path, err)
	}
	return s, nil
}

// Save replaces the state file atomically and durably.
func Save(path string, s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".app-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: a no-op
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
