package node

import (
	"errors"
	"sync"

	dbm "github.com/cometbft/cometbft-db"
	cmtcfg "github.com/cometbft/cometbft/config"
	sm "github.com/cometbft/cometbft/state"
	"github.com/cometbft/cometbft/types"
)

// stateStore gives the app the validator sets CometBFT stores. The node
// opens its databases through provider, which keeps the state database's
// handle: CometBFT opens it before its handshake, so the sets are there
// for the blocks the handshake replays too. The app only reads; CometBFT
// writes, and the database is safe for both.
type stateStore struct {
	mu    sync.Mutex
	store sm.Store
}

func (s *stateStore) provider(ctx *cmtcfg.DBContext) (dbm.DB, error) {
	db, err := cmtcfg.DefaultDBProvider(ctx)
	if err == nil && ctx.ID == "state" {
		s.mu.Lock()
		s.store = sm.NewStore(db, sm.StoreOptions{})
		s.mu.Unlock()
	}
	return db, err
}

// Validators returns CometBFT's validator set of height h, with the
// proposer priorities of its round 0.
func (s *stateStore) Validators(h int64) (*types.ValidatorSet, error) {
	s.mu.Lock()
	store := s.store
	s.mu.Unlock()
	if store == nil {
		return nil, errors.New("CometBFT's state store is not open yet")
	}
	return store.LoadValidators(h)
}
