// Package state is the StateManager: the consensus layer's durable record
// of the chain, in PostgreSQL. Stage 2 kept it in a bbolt file next to the
// node; here it is shared: the leader candidates write to one cluster
// database, and every member keeps its own copy in its own database.
//
// Each block is stored whole: the payload (for replay into a geth that lost
// it), who produced it, in which fencing epoch, and the leader's signature.
// The leader's commit is one transaction that refuses a stale epoch and a
// block that does not extend the stored head; only after it commits does the
// leader make the block final in geth. PostgreSQL's commit is durable
// (synchronous_commit, fsync of the WAL) before it returns, so, as in stage
// 2, the store is at or ahead of geth after a crash, never behind it.
package state

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
)

// ErrNoPayload means the store holds no block (or no payload) for a number.
var ErrNoPayload = errors.New("no stored payload")

// ErrOtherChain means the database was created for another genesis.
var ErrOtherChain = errors.New("the store belongs to another chain")

// Head is the last block the store finalized, and the epoch it was made in.
type Head struct {
	Number    uint64      `json:"number"`
	Hash      common.Hash `json:"hash"`
	Timestamp uint64      `json:"timestamp"`
	Epoch     uint64      `json:"epoch"`
}

// Manager is the StateManager, now a PostgreSQL database. It is safe for
// concurrent use.
type Manager struct {
	pool *pgxpool.Pool
	call time.Duration // bounds every call (Limits.Call) but the block reads
	read time.Duration // bounds the block reads (Limits.Read)
}

// Limits bound how long the store waits on PostgreSQL; zero fields take
// the defaults.
type Limits struct {
	// Lock is PostgreSQL's lock_timeout and
	// idle_in_transaction_session_timeout on every session: no statement
	// waits longer for a lock, and a session that sits inside a
	// transaction this long, its client stopped or cut off, is ended and
	// its locks released. A leader frozen inside its commit holds the
	// fencing row's lock; below the lease TTL, the lock is free by the time
	// the next leader fences. 1 s by default.
	Lock time.Duration
	// Call bounds every call, so that a database that hangs (or a network
	// that drops every packet) is an error, not a node stuck forever. 10 s
	// by default; the migrations at Open get at least migrationTimeout.
	Call time.Duration
	// Read bounds the reads of stored blocks instead (Block, Payload,
	// BlocksAfter): a page of them is up to MaxPageBytes, which a tight
	// Call would not leave time for. 10 s by default.
	Read time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.Lock <= 0 {
		l.Lock = time.Second
	}
	if l.Call <= 0 {
		l.Call = 10 * time.Second
	}
	if l.Read <= 0 {
		l.Read = 10 * time.Second
	}
	return l
}

// Errors a committing leader tells apart with errors.Is.
var (
	// ErrStaleEpoch: a newer leader has written; this one must step down.
	ErrStaleEpoch = errors.New("stale fencing epoch")
	// ErrNotHead: the block's parent is not the stored head (another leader
	// committed first, or the leader is behind).
	ErrNotHead = errors.New("block does not extend the stored head")
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationTimeout bounds the migrations at Open, whatever Limits.Call:
// they run once, and may wait for another node's under the advisory lock.
const migrationTimeout = 30 * time.Second

// migrationLock is the advisory lock id that serializes migrations when
// several nodes start at once.
const migrationLock = 0x7374616765330001

// Open connects to url and applies the embedded migrations that are not
// applied yet.
func Open(ctx context.Context, url string, limits Limits) (*Manager, error) {
	limits = limits.withDefaults()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("--postgres-url: %w", err)
	}
	lock := strconv.FormatInt(max(1, limits.Lock.Milliseconds()), 10) // milliseconds
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = lock
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = lock
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres %s: %w", cfg.ConnConfig.Host, err)
	}
	s := &Manager{pool: pool, call: limits.Call, read: limits.Read}
	mctx, cancel := context.WithTimeout(ctx, max(limits.Call, migrationTimeout))
	defer cancel()
	if err := s.migrate(mctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// bound gives a call the store's time limit.
func (s *Manager) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.call)
}

// Close closes the pool.
func (s *Manager) Close() { s.pool.Close() }

// migrate applies migrations/NNNN_*.sql in order, each in its own
// transaction with its version recorded, under an advisory lock.
func (s *Manager) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer conn.Release()
	// Another node may be migrating: wait for it past lock_timeout (the
	// session's value comes back with RESET).
	if _, err := conn.Exec(ctx, "SET lock_timeout = 0"); err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "RESET lock_timeout") //nolint:errcheck
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLock)); err != nil {
		return fmt.Errorf("migrations: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(migrationLock)) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		version, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, "migrations/"), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a number: %w", name, err)
		}
		sql, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var applied bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", version).Scan(&applied); err != nil || applied {
				return err
			}
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
	}
	return nil
}

// Block is one stored block.
type Block struct {
	Number     uint64
	Hash       common.Hash
	ParentHash common.Hash
	Timestamp  uint64
	Payload    *engine.Payload // nil for genesis
	LeaderID   string
	Run        string // the run id of the leader's process (election.NewRun)
	Epoch      uint64
	Signature  []byte
	// Cosignatures are the co-signers' signatures of signer.Cosign (k of
	// --cosigners when --threshold is above 1; none otherwise).
	Cosignatures [][]byte
	CreatedAt    time.Time // when this store committed it (the database's clock)
}

// Init records block 0 if the store is empty, and refuses a store
// made for another chain.
func (s *Manager) Init(ctx context.Context, genesis Head) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `INSERT INTO blocks (number, hash, parent_hash, timestamp, leader_id, epoch)
		VALUES (0, $1, $2, $3, 'genesis', 0) ON CONFLICT (number) DO NOTHING`,
		genesis.Hash.Bytes(), common.Hash{}.Bytes(), int64(genesis.Timestamp))
	if err != nil {
		return fmt.Errorf("store genesis: %w", err)
	}
	var have []byte
	if err := s.pool.QueryRow(ctx, "SELECT hash FROM blocks WHERE number = 0").Scan(&have); err != nil {
		return err
	}
	if common.BytesToHash(have) != genesis.Hash {
		return fmt.Errorf("%w: it was created for genesis %x, geth runs genesis %s: use another database", ErrOtherChain, have, genesis.Hash)
	}
	return nil
}

// Claim is who holds a fencing epoch: a leader's instance id and the run
// id of its process.
type Claim struct {
	Epoch  uint64
	Leader string
	Run    string
}

func (c Claim) String() string {
	return fmt.Sprintf("epoch %d of %s (run %s)", c.Epoch, c.Leader, c.Run)
}

// Claim returns who writes block b.
func (b *Block) Claim() Claim { return Claim{Epoch: b.Epoch, Leader: b.LeaderID, Run: b.Run} }

// Commit is the fenced write, one transaction for blocks that chain: lock
// the fencing row; refuse an epoch older than the newest seen, or held by
// another process (ErrStaleEpoch); refuse a first block whose parent is not
// the stored head, or blocks that do not chain (ErrNotHead); insert the
// blocks, claiming each new epoch. A leader commits its block, a member the
// blocks it applied at once.
//
// Every statement but the claim of a new epoch goes in one pipelined batch,
// inserts included, and the checks read the answers in order: three round
// trips a commit (BEGIN, the batch, COMMIT) where one statement at a time
// took six, which is what a store far from its leader pays for. A failed
// check returns an error, and the transaction, inserts and all, is rolled
// back.
func (s *Manager) Commit(ctx context.Context, blocks ...Block) error {
	if len(blocks) == 0 {
		return nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	batch := &pgx.Batch{}
	batch.Queue(lockQuery)
	batch.Queue("SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1")
	var claims []Claim // each block's claim, once, in order
	for _, b := range blocks {
		if c := b.Claim(); len(claims) == 0 || claims[len(claims)-1] != c {
			claims = append(claims, c)
			batch.Queue(holderQuery, int64(c.Epoch))
		}
	}
	for _, b := range blocks {
		payload, err := json.Marshal(b.Payload)
		if err != nil {
			return err
		}
		batch.Queue(`INSERT INTO blocks (number, hash, parent_hash, timestamp, payload, leader_id, run, epoch, signature, cosignatures)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			int64(b.Number), b.Hash.Bytes(), b.ParentHash.Bytes(), int64(b.Timestamp), payload, b.LeaderID, b.Run, int64(b.Epoch), b.Signature, b.Cosignatures)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		unclaimed, err := checkCommit(tx.SendBatch(ctx, batch), blocks, claims)
		if err != nil {
			return err
		}
		for _, c := range unclaimed {
			if err := writeClaim(ctx, tx, c); err != nil {
				return err
			}
		}
		return nil
	})
}

// checkCommit reads the answers to Commit's batch, checks them, and returns
// the claims to write.
func checkCommit(results pgx.BatchResults, blocks []Block, claims []Claim) (unclaimed []Claim, err error) {
	defer results.Close()
	fenced, err := lockedEpoch(results)
	if err != nil {
		return nil, err
	}
	if inCommit != nil {
		inCommit(blocks[0]) // a test build's fault: the fencing row is locked
	}
	var headNum uint64
	var headHash []byte
	if err := results.QueryRow().Scan(&headNum, &headHash); err != nil {
		return nil, fmt.Errorf("read head: %w", err)
	}
	for _, c := range claims {
		holder, err := scanHolder(results.QueryRow(), c.Epoch)
		if err != nil {
			return nil, err
		}
		held, err := mayWrite(fenced, c, holder)
		if err != nil {
			return nil, err
		}
		if !held {
			unclaimed = append(unclaimed, c)
		}
		fenced = c.Epoch
	}
	head := Head{Number: headNum, Hash: common.BytesToHash(headHash)}
	for _, b := range blocks {
		if b.Number != head.Number+1 || b.ParentHash != head.Hash {
			return nil, fmt.Errorf("block %d on %s, head %d %s: %w", b.Number, b.ParentHash, head.Number, head.Hash, ErrNotHead)
		}
		head = Head{Number: b.Number, Hash: b.Hash}
	}
	for _, b := range blocks {
		if _, err := results.Exec(); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation: that hash or number exists
				return nil, fmt.Errorf("block %d %s: %w: %s", b.Number, b.Hash, ErrNotHead, pgErr.Detail)
			}
			return nil, err
		}
	}
	return unclaimed, results.Close()
}

// lockQuery locks the fencing row and reads the newest epoch written.
const lockQuery = "SELECT epoch FROM fencing FOR UPDATE"

// lockedEpoch reads lockQuery's answer.
func lockedEpoch(results pgx.BatchResults) (uint64, error) {
	var fenced uint64
	if err := results.QueryRow().Scan(&fenced); err != nil {
		return 0, fmt.Errorf("lock fencing row: %w", err)
	}
	return fenced, nil
}

// holderQuery reads the claim on an epoch.
const holderQuery = "SELECT epoch, leader_id, run FROM epochs WHERE epoch = $1"

// scanHolder scans holderQuery's answer: nil when nobody claimed the epoch.
func scanHolder(row pgx.Row, epoch uint64) (*Claim, error) {
	var holder Claim
	err := row.Scan(&holder.Epoch, &holder.Leader, &holder.Run)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read the claim on epoch %d: %w", epoch, err)
	}
	return &holder, nil
}

// mayWrite says whether c may write, the fencing row locked at epoch fenced
// and its epoch claimed by holder (nil: by nobody): an older epoch is
// refused, the current one only to the process that claimed it, and a
// newer one must be claimed (held false). Redis hands out the epochs, but
// this is what makes them unique: Redis may restart empty and give one
// epoch to two candidates, and two processes may share an instance id; the
// first to claim an epoch here holds it.
func mayWrite(fenced uint64, c Claim, holder *Claim) (held bool, err error) {
	switch {
	case c.Epoch < fenced:
		return false, fmt.Errorf("%s, the store has seen epoch %d: %w", c, fenced, ErrStaleEpoch)
	case holder == nil:
		return false, nil
	case *holder != c:
		return false, fmt.Errorf("%s: the epoch is claimed by %s (run %s): %w", c, holder.Leader, holder.Run, ErrStaleEpoch)
	}
	return true, nil
}

// writeClaim claims c's epoch for c, raising the fencing epoch, in one
// round trip.
func writeClaim(ctx context.Context, tx pgx.Tx, c Claim) error {
	batch := &pgx.Batch{}
	batch.Queue("INSERT INTO epochs (epoch, leader_id, run) VALUES ($1, $2, $3)", int64(c.Epoch), c.Leader, c.Run)
	batch.Queue("UPDATE fencing SET epoch = $1", int64(c.Epoch))
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("claim %s: %w", c, err)
	}
	return nil
}

// Head returns the stored head.
func (s *Manager) Head(ctx context.Context) (Head, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var h Head
	var hash []byte
	var ts, epoch int64
	err := s.pool.QueryRow(ctx, "SELECT number, hash, timestamp, epoch FROM blocks ORDER BY number DESC LIMIT 1").Scan(&h.Number, &hash, &ts, &epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, fmt.Errorf("empty store: %w", ErrNoPayload)
	}
	h.Hash, h.Timestamp, h.Epoch = common.BytesToHash(hash), uint64(ts), uint64(epoch)
	return h, err
}

// Payload returns the stored payload of block n, for replay.
func (s *Manager) Payload(ctx context.Context, n uint64) (*engine.Payload, error) {
	b, err := s.Block(ctx, n)
	if err != nil {
		return nil, err
	}
	if b.Payload == nil {
		return nil, fmt.Errorf("block %d: %w", n, ErrNoPayload)
	}
	return b.Payload, nil
}

// HashAt returns the stored hash of block n.
func (s *Manager) HashAt(ctx context.Context, n uint64) (common.Hash, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var hash []byte
	err := s.pool.QueryRow(ctx, "SELECT hash FROM blocks WHERE number = $1", int64(n)).Scan(&hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return common.Hash{}, fmt.Errorf("block %d: %w", n, ErrNoPayload)
	}
	return common.BytesToHash(hash), err
}

// Fence claims the lease's epoch, as a new leader does before its first
// block: from then on the database refuses every older leader, even one
// that has not noticed it lost the lease, and every other process with the
// same epoch. ErrStaleEpoch if a newer epoch has written or another
// process claimed this one.
func (s *Manager) Fence(ctx context.Context, c Claim) error {
	if inFence != nil {
		inFence(c) // a test build's fault: a leader paused before its claim
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		batch := &pgx.Batch{} // one round trip, as in Commit
		batch.Queue(lockQuery)
		batch.Queue(holderQuery, int64(c.Epoch))
		fenced, holder, err := readFence(tx.SendBatch(ctx, batch), c)
		if err != nil {
			return err
		}
		if held, err := mayWrite(fenced, c, holder); err != nil || held {
			return err
		}
		return writeClaim(ctx, tx, c)
	})
}

// readFence reads the answers to Fence's batch: the fencing epoch, locked,
// and the claim on c's epoch.
func readFence(results pgx.BatchResults, c Claim) (fenced uint64, holder *Claim, err error) {
	defer results.Close()
	if fenced, err = lockedEpoch(results); err != nil {
		return 0, nil, err
	}
	if holder, err = scanHolder(results.QueryRow(), c.Epoch); err != nil {
		return 0, nil, err
	}
	return fenced, holder, results.Close()
}

// Adoption returns the block an adopted chain runs through (--adopt-chain),
// and false when no chain was ever adopted into this store.
func (s *Manager) Adoption(ctx context.Context) (through uint64, ok bool, err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	err = s.pool.QueryRow(ctx, "SELECT through FROM adoption").Scan(&through)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return through, err == nil, err
}

// StartAdoption records that a chain through block `through` is being
// adopted, unless one already was: it returns the recorded one.
func (s *Manager) StartAdoption(ctx context.Context, through uint64) (uint64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var recorded int64
	err := s.pool.QueryRow(ctx, `INSERT INTO adoption (through) VALUES ($1)
		ON CONFLICT (id) DO UPDATE SET through = adoption.through RETURNING through`, int64(through)).Scan(&recorded)
	return uint64(recorded), err
}

// Claims returns every epoch's claim, oldest first.
func (s *Manager) Claims(ctx context.Context) ([]Claim, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT epoch, leader_id, run FROM epochs ORDER BY epoch")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Claim, error) {
		var c Claim
		err := row.Scan(&c.Epoch, &c.Leader, &c.Run)
		return c, err
	})
}

// FencedEpoch returns the newest epoch any leader has written with: the
// floor a new leader's epoch must exceed.
func (s *Manager) FencedEpoch(ctx context.Context) (uint64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var e uint64
	err := s.pool.QueryRow(ctx, "SELECT epoch FROM fencing").Scan(&e)
	return e, err
}

const blockColumns = "number, hash, parent_hash, timestamp, payload, leader_id, run, epoch, signature, cosignatures, created_at"

// ErrSignedOther means a co-signer already signed another block at that
// height and epoch.
var ErrSignedOther = errors.New("already co-signed another block at this height and epoch")

// RecordCosign records, durably, that signer co-signs block hash at number
// in epoch, before the signature leaves the node. Recording the same block
// again is a no-op; another block at that height and epoch is
// ErrSignedOther, whatever restarts came between.
func (s *Manager) RecordCosign(ctx context.Context, signer common.Address, number, epoch uint64, hash common.Hash) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var have []byte
	err := s.pool.QueryRow(ctx, `INSERT INTO cosigned (signer, number, epoch, hash) VALUES ($1, $2, $3, $4)
		ON CONFLICT (signer, number, epoch) DO UPDATE SET signer = EXCLUDED.signer
		RETURNING hash`, signer.Bytes(), int64(number), int64(epoch), hash.Bytes()).Scan(&have)
	if err != nil {
		return fmt.Errorf("record co-signature of block %d: %w", number, err)
	}
	if common.BytesToHash(have) != hash {
		return fmt.Errorf("block %d %s in epoch %d: %w (%x)", number, hash, epoch, ErrSignedOther, have)
	}
	return nil
}

// Block returns stored block n.
func (s *Manager) Block(ctx context.Context, n uint64) (*Block, error) {
	return s.queryBlock(ctx, fmt.Sprint(n), "SELECT "+blockColumns+" FROM blocks WHERE number = $1", int64(n))
}

// BlockByHash returns the stored block with this hash.
func (s *Manager) BlockByHash(ctx context.Context, hash common.Hash) (*Block, error) {
	return s.queryBlock(ctx, hash.Hex(), "SELECT "+blockColumns+" FROM blocks WHERE hash = $1", hash.Bytes())
}

// MaxPageBytes bounds the payloads one BlocksAfter returns: a full block
// is up to 8 MiB (EIP-7934), about 17 MB as stored JSON, and a follower
// far behind must not be sent hundreds of them at once.
const MaxPageBytes = 64 << 20

// BlocksAfter returns up to limit blocks numbered above after, oldest
// first, and fewer once their payloads hold MaxPageBytes (always one).
func (s *Manager) BlocksAfter(ctx context.Context, after uint64, limit int) ([]*Block, error) {
	ctx, cancel := context.WithTimeout(ctx, s.read)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+blockColumns+` FROM blocks WHERE number IN (
		SELECT number FROM (
			SELECT number, sum(payload_bytes) OVER (ORDER BY number) - payload_bytes AS before
			FROM blocks WHERE number > $1 ORDER BY number LIMIT $2) page
		WHERE before < $3)
		ORDER BY number`, int64(after), limit, MaxPageBytes)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Block
	for rows.Next() {
		b, err := scanBlock(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

func (s *Manager) queryBlock(ctx context.Context, what, sql string, arg any) (*Block, error) {
	ctx, cancel := context.WithTimeout(ctx, s.read)
	defer cancel()
	b, err := scanBlock(s.pool.QueryRow(ctx, sql, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("block %s: %w", what, ErrNoPayload)
	}
	return b, err
}

func scanBlock(row pgx.Row) (*Block, error) {
	b := &Block{}
	var hash, parent, payload []byte
	var number, ts, epoch int64
	if err := row.Scan(&number, &hash, &parent, &ts, &payload, &b.LeaderID, &b.Run, &epoch, &b.Signature, &b.Cosignatures, &b.CreatedAt); err != nil {
		return nil, err
	}
	b.Number, b.Hash, b.ParentHash, b.Timestamp, b.Epoch = uint64(number), common.BytesToHash(hash), common.BytesToHash(parent), uint64(ts), uint64(epoch)
	if payload != nil && string(payload) != "null" {
		b.Payload = new(engine.Payload)
		if err := json.Unmarshal(payload, b.Payload); err != nil {
			return nil, fmt.Errorf("block %d payload: %w", b.Number, err)
		}
	}
	return b, nil
}
