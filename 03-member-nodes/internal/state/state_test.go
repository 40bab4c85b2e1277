package state

import (
	"context"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
)

// The block store against a real PostgreSQL started by the devnet library.

func newPG(t *testing.T) (*devnet.Postgres, *Manager) {
	t.Helper()
	n := devnet.StartT(t, devnet.Config{Postgres: 1})
	s, err := Open(context.Background(), n.Postgres[0].URL(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Init(context.Background(), Head{Hash: common.HexToHash("0x9e")}); err != nil {
		t.Fatal(err)
	}
	return n.Postgres[0], s
}

func block(n uint64, parent common.Hash, leader string, epoch uint64) Block {
	hash := common.BigToHash(new(big.Int).SetUint64(1000*epoch + n))
	return Block{Number: n, Hash: hash, ParentHash: parent, Timestamp: 100 + n, LeaderID: leader, Run: leader + "-run", Epoch: epoch,
		Signature: []byte{1, 2, 3},
		Payload: &engine.Payload{ExecutionPayload: &beacon.ExecutableData{Number: n, ParentHash: parent, BlockHash: hash,
			BaseFeePerGas: big.NewInt(7), LogsBloom: make([]byte, 256), ExtraData: []byte{}, Transactions: [][]byte{{0x02, 0x01}}},
			VersionedHashes: []common.Hash{}, Requests: []hexutil.Bytes{}}}
}

func claimOf(leader string, epoch uint64) Claim {
	return Claim{Epoch: epoch, Leader: leader, Run: leader + "-run"}
}

// One epoch, two processes: Redis restarted empty handed epoch 2 to two
// candidates, or two processes run with one instance id (same leader id,
// another run). The first claim holds the epoch; the other process can
// neither fence nor commit in it.
func TestOneClaimPerEpoch(t *testing.T) {
	_, s := newPG(t)
	ctx := context.Background()
	b1 := block(1, common.HexToHash("0x9e"), "leader-1", 1)
	if err := s.Commit(ctx, b1); err != nil { // a first commit claims its epoch
		t.Fatal(err)
	}
	if err := s.Fence(ctx, claimOf("leader-1", 1)); err != nil {
		t.Fatalf("the holder fencing its own epoch again: %v", err)
	}
	if err := s.Fence(ctx, claimOf("leader-2", 2)); err != nil {
		t.Fatal(err)
	}
	twin := Claim{Epoch: 2, Leader: "leader-2", Run: "another-run"}
	for _, c := range []Claim{claimOf("leader-3", 2), twin} {
		if err := s.Fence(ctx, c); !errors.Is(err, ErrStaleEpoch) || !strings.Contains(err.Error(), "claimed by leader-2 (run leader-2-run)") {
			t.Fatalf("fence by %s: %v", c, err)
		}
		b := block(2, b1.Hash, c.Leader, 2)
		b.Run = c.Run
		if err := s.Commit(ctx, b); !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("commit by %s: %v", c, err)
		}
	}
	if err := s.Commit(ctx, block(2, b1.Hash, "leader-2", 2)); err != nil {
		t.Fatalf("the holder's commit: %v", err)
	}
	got, err := s.Claims(ctx)
	want := []Claim{claimOf("leader-1", 1), claimOf("leader-2", 2)}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("claims %v %v, want %v", got, err, want)
	}
	if b, err := s.Block(ctx, 2); err != nil || b.Run != "leader-2-run" {
		t.Fatalf("block 2 read back as %+v, %v", b, err)
	}
}

func TestFencedCommit(t *testing.T) {
	_, s := newPG(t)
	ctx := context.Background()
	parent := common.HexToHash("0x9e")
	for n := uint64(1); n <= 3; n++ {
		b := block(n, parent, "leader-1", 1)
		if err := s.Commit(ctx, b); err != nil {
			t.Fatalf("commit %d: %v", n, err)
		}
		parent = b.Hash
	}
	got, err := s.Block(ctx, 2)
	if err != nil || got.LeaderID != "leader-1" || time.Since(got.CreatedAt) > time.Minute || got.Epoch != 1 || got.Payload == nil ||
		got.Payload.ExecutionPayload.Number != 2 || len(got.Payload.ExecutionPayload.Transactions) != 1 {
		t.Fatalf("block 2 read back as %+v, %v", got, err)
	}

	// A new leader (epoch 2) commits block 4; the old one (epoch 1) is fenced out.
	b4 := block(4, parent, "leader-2", 2)
	if err := s.Commit(ctx, b4); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, block(5, b4.Hash, "leader-1", 1)); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("stale leader: %v", err)
	}
	// Fencing ahead of the first block: epoch 3 shuts epoch 2 out at once.
	if err := s.Fence(ctx, claimOf("leader-3", 3)); err != nil {
		t.Fatal(err)
	}
	if err := s.Fence(ctx, claimOf("leader-2", 2)); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("fence with an older epoch: %v", err)
	}
	if err := s.Commit(ctx, block(5, b4.Hash, "leader-2", 2)); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("leader of epoch 2 after epoch 3 fenced: %v", err)
	}
	// Not the head's child: wrong parent, wrong number, an existing number.
	for _, b := range []Block{block(5, parent, "leader-3", 3), block(6, b4.Hash, "leader-3", 3), block(4, parent, "leader-3", 3)} {
		if err := s.Commit(ctx, b); !errors.Is(err, ErrNotHead) {
			t.Fatalf("block %d on %s: %v", b.Number, b.ParentHash, err)
		}
	}
	if h, err := s.Head(ctx); err != nil || h.Number != 4 || h.Hash != b4.Hash || h.Epoch != 2 {
		t.Fatalf("head %+v %v, want block 4", h, err)
	}
	if e, err := s.FencedEpoch(ctx); err != nil || e != 3 {
		t.Fatalf("fenced epoch %d %v", e, err)
	}
	if err := s.Init(ctx, Head{Hash: common.HexToHash("0x01")}); err == nil {
		t.Fatal("a store of another chain accepted")
	}
}

// A member stores the blocks it applied at once, in one transaction: all
// of them, claiming each new epoch, or none when any of them is refused.
func TestCommitSeveralBlocks(t *testing.T) {
	_, s := newPG(t)
	ctx := context.Background()
	b1 := block(1, common.HexToHash("0x9e"), "leader-1", 1)
	b2 := block(2, b1.Hash, "leader-1", 1)
	b3 := block(3, b2.Hash, "leader-2", 2)
	b4 := block(4, b3.Hash, "leader-2", 2)
	refused := []struct {
		name   string
		blocks []Block
		want   error
	}{
		{"a gap", []Block{b1, b2, b4}, ErrNotHead},
		{"a wrong parent", []Block{b1, block(2, common.HexToHash("0xbad"), "leader-1", 1)}, ErrNotHead},
		{"not on the head", []Block{b2, b3}, ErrNotHead},
		{"an older epoch after a newer", []Block{b1, b2, b3, block(4, b3.Hash, "leader-1", 1)}, ErrStaleEpoch},
	}
	for _, r := range refused {
		if err := s.Commit(ctx, r.blocks...); !errors.Is(err, r.want) {
			t.Fatalf("%s: %v, want %v", r.name, err, r.want)
		}
		if h, err := s.Head(ctx); err != nil || h.Number != 0 {
			t.Fatalf("%s: head %+v %v: a refused commit stored blocks", r.name, h, err)
		}
		if cs, err := s.Claims(ctx); err != nil || len(cs) != 0 {
			t.Fatalf("%s: claims %v %v: a refused commit claimed an epoch", r.name, cs, err)
		}
	}
	if err := s.Commit(ctx, b1, b2, b3, b4); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx); err != nil || h.Number != 4 || h.Hash != b4.Hash || h.Epoch != 2 {
		t.Fatalf("head %+v %v, want block 4", h, err)
	}
	if cs, err := s.Claims(ctx); err != nil || !slices.Equal(cs, []Claim{claimOf("leader-1", 1), claimOf("leader-2", 2)}) {
		t.Fatalf("claims %v %v, want epochs 1 and 2", cs, err)
	}
	blocks, err := s.BlocksAfter(ctx, 0, 10)
	if err != nil || len(blocks) != 4 || blocks[2].Hash != b3.Hash || blocks[2].LeaderID != "leader-2" {
		t.Fatalf("stored %v %v", first(blocks), err)
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatalf("no blocks: %v", err)
	}
}

// Two leaders racing for the same height: exactly one block lands.
func TestRacingCommitsOneWins(t *testing.T) {
	_, s := newPG(t)
	parent := common.HexToHash("0x9e")
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for epoch := uint64(1); epoch <= 6; epoch++ {
		wg.Go(func() {
			if err := s.Commit(context.Background(), block(1, parent, "leader", epoch)); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrNotHead) && !errors.Is(err, ErrStaleEpoch) {
				t.Errorf("epoch %d: %v", epoch, err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d blocks committed at height 1", wins)
	}
}

// Migrations run once, also when several nodes start at the same time.
func TestMigrationsAreIdempotent(t *testing.T) {
	n := devnet.StartT(t, devnet.Config{Postgres: 1})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := Open(context.Background(), n.Postgres[0].URL(), Limits{})
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
}

// PostgreSQL SIGKILLed: commits fail while it is down, nothing committed is
// lost, and commits resume once it is back.
func TestSurvivesPostgresKill(t *testing.T) {
	pg, s := newPG(t)
	ctx := context.Background()
	b1 := block(1, common.HexToHash("0x9e"), "leader", 1)
	if err := s.Commit(ctx, b1); err != nil {
		t.Fatal(err)
	}
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	b2 := block(2, b1.Hash, "leader", 1)
	if err := s.Commit(ctx, b2); err == nil || errors.Is(err, ErrNotHead) || errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("commit with PostgreSQL down: %v", err)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx); err != nil || h.Hash != b1.Hash {
		t.Fatalf("head after the crash: %+v %v", h, err)
	}
	if err := s.Commit(ctx, b2); err != nil {
		t.Fatalf("commit after restart: %v", err)
	}
}

// A page of blocks stops at MaxPageBytes of payloads, with at least one
// block, so that a follower far behind full blocks is never sent more than
// it can read; small blocks come a whole page at a time.
func TestBlocksAfterBoundsPageBytes(t *testing.T) {
	_, s := newPG(t)
	ctx := context.Background()
	parent := common.HexToHash("0x9e")
	large := make([]byte, MaxPageBytes/5) // about 2/5 of a page as hex JSON
	var sizes []int
	for n := uint64(1); n <= 6; n++ {
		b := block(n, parent, "leader-1", 1)
		if n <= 4 {
			b.Payload.ExecutionPayload.Transactions = [][]byte{large}
		}
		if err := s.Commit(ctx, b); err != nil {
			t.Fatalf("commit %d: %v", n, err)
		}
		parent = b.Hash
		sizes = append(sizes, len(b.Payload.ExecutionPayload.Transactions[0]))
	}
	for _, tc := range []struct {
		after      uint64
		limit      int
		wantFirst  uint64
		wantBlocks int
	}{
		{0, 100, 1, 3}, // 2/5 + 2/5 + 2/5: the third crosses the budget, the fourth is left
		{3, 100, 4, 3}, // the last big block and the small ones after it
		{0, 2, 1, 2},   // the count still applies
		{6, 100, 0, 0},
	} {
		got, err := s.BlocksAfter(ctx, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.wantBlocks || (len(got) > 0 && got[0].Number != tc.wantFirst) {
			t.Errorf("BlocksAfter(%d, %d): %d blocks from %v, want %d from %d", tc.after, tc.limit, len(got), first(got), tc.wantBlocks, tc.wantFirst)
		}
		for i, b := range got {
			if b.Number != got[0].Number+uint64(i) || len(b.Payload.ExecutionPayload.Transactions[0]) != sizes[b.Number-1] {
				t.Errorf("BlocksAfter(%d, %d): block %d is number %d with a %d-byte transaction", tc.after, tc.limit, i, b.Number, len(b.Payload.ExecutionPayload.Transactions[0]))
			}
		}
	}
}

func first(bs []*Block) any {
	if len(bs) == 0 {
		return "none"
	}
	return bs[0].Number
}

// A leader frozen inside its commit, holding the fencing row's lock, does
// not keep the next leader from fencing: PostgreSQL ends the frozen
// session's transaction after Limits.Lock idle, which releases the lock,
// and the frozen commit fails when its leader wakes up.
func TestFrozenCommitReleasesTheFence(t *testing.T) {
	pg, _ := newPG(t)
	limits := Limits{Lock: 300 * time.Millisecond}
	open := func() *Manager {
		s, err := Open(context.Background(), pg.URL(), limits)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	old, next := open(), open()
	ctx := context.Background()
	b1 := block(1, common.HexToHash("0x9e"), "leader-1", 1)
	if err := old.Commit(ctx, b1); err != nil {
		t.Fatal(err)
	}
	locked, wake := make(chan struct{}), make(chan struct{})
	var freeze sync.Once
	inCommit = func(b Block) {
		if b.LeaderID == "leader-1" {
			freeze.Do(func() {
				close(locked)
				<-wake // frozen, the transaction open and the row locked
			})
		}
	}
	t.Cleanup(func() { inCommit = nil })
	frozen := make(chan error, 1)
	go func() { frozen <- old.Commit(ctx, block(2, b1.Hash, "leader-1", 1)) }()
	<-locked
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for err := next.Fence(ctx, claimOf("leader-2", 2)); err != nil; err = next.Fence(ctx, claimOf("leader-2", 2)) {
		if time.Now().After(deadline) {
			t.Fatalf("the next leader could not fence while the old one was frozen in its commit: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("MEASURED fenced %s after the old leader froze holding the lock (Limits.Lock %s)", time.Since(start).Round(time.Millisecond), limits.Lock)
	close(wake)
	woke := time.Now()
	err := <-frozen
	if err == nil {
		t.Fatal("the frozen leader's commit went through after it woke up")
	}
	t.Logf("MEASURED the frozen commit failed %s after its leader woke: %v", time.Since(woke).Round(time.Millisecond), err)
	if err := next.Commit(ctx, block(2, b1.Hash, "leader-2", 2)); err != nil {
		t.Fatalf("the next leader's first block: %v", err)
	}
	if b, err := next.Block(ctx, 2); err != nil || b.LeaderID != "leader-2" {
		t.Fatalf("block 2: %+v, %v", b, err)
	}
}

// An adoption is recorded once: the first through-block stays.
func TestAdoptionRecordedOnce(t *testing.T) {
	_, s := newPG(t)
	ctx := context.Background()
	if _, ok, err := s.Adoption(ctx); err != nil || ok {
		t.Fatalf("a new store reports an adoption: %v %v", ok, err)
	}
	for _, through := range []uint64{12, 40} {
		if got, err := s.StartAdoption(ctx, through); err != nil || got != 12 {
			t.Fatalf("StartAdoption(%d) = %d, %v; want the first, 12", through, got, err)
		}
	}
	if through, ok, err := s.Adoption(ctx); err != nil || !ok || through != 12 {
		t.Fatalf("adoption %d %v %v", through, ok, err)
	}
}

// A co-signer's promise: one block per height and epoch, kept in its
// store, so that a restart cannot make it sign a second one; another epoch
// at the same height is another decision. Co-signatures are stored with
// the block and read back.
func TestCosignRecordedOncePerHeightAndEpoch(t *testing.T) {
	_, s := newPG(t)
	ctx := context.Background()
	signer, other := common.HexToAddress("0xc0"), common.HexToAddress("0xc1")
	a, b := common.HexToHash("0xa"), common.HexToHash("0xb")
	for _, c := range []struct {
		who    common.Address
		number uint64
		epoch  uint64
		hash   common.Hash
		err    error
	}{
		{signer, 7, 2, a, nil},
		{signer, 7, 2, a, nil},            // the same block again: a no-op
		{signer, 7, 2, b, ErrSignedOther}, // another block at that height and epoch
		{signer, 7, 3, b, nil},            // a new epoch
		{other, 7, 2, b, nil},             // another co-signer
	} {
		if err := s.RecordCosign(ctx, c.who, c.number, c.epoch, c.hash); !errors.Is(err, c.err) {
			t.Fatalf("%s signs block %d %s in epoch %d: %v, want %v", c.who, c.number, c.hash, c.epoch, err, c.err)
		}
	}

	b1 := block(1, common.HexToHash("0x9e"), "leader-1", 1)
	b1.Cosignatures = [][]byte{{1, 2}, {3, 4, 5}}
	if err := s.Commit(ctx, b1); err != nil {
		t.Fatal(err)
	}
	got, err := s.Block(ctx, 1)
	if err != nil || len(got.Cosignatures) != 2 || string(got.Cosignatures[1]) != string([]byte{3, 4, 5}) {
		t.Fatalf("co-signatures read back as %v, %v", got.Cosignatures, err)
	}
	if back := NewBlockJSON(got).Block(); len(back.Cosignatures) != 2 || string(back.Cosignatures[0]) != string([]byte{1, 2}) {
		t.Fatalf("co-signatures through the wire: %v", back.Cosignatures)
	}
}
