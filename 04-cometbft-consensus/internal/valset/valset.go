// Package valset is the `validator` command's work: it changes the
// validator set by sending transactions to the registry contract through a
// geth's RPC, and reads the set as CometBFT and the registry hold it.
package valset

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/app"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
)

// ParseKey reads a CometBFT ed25519 public key: base64, as CometBFT's key
// files and RPC show it, or 32 bytes of hex with or without 0x; or, when s
// names a directory, the key of the CometBFT home there
// (config/priv_validator_key.json).
func ParseKey(s string) ([32]byte, error) {
	var k [32]byte
	if fi, err := os.Stat(s); err == nil && fi.IsDir() {
		return homeKey(s)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		b, err = hex.DecodeString(strings.TrimPrefix(s, "0x"))
	}
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("validator key %q: want a CometBFT ed25519 public key (32 bytes, base64 as in priv_validator_key.json, or hex), or a CometBFT home", s)
	}
	copy(k[:], b)
	return k, nil
}

// homeKey reads the public key of the CometBFT home dir.
func homeKey(dir string) ([32]byte, error) {
	var k [32]byte
	path := filepath.Join(dir, "config", "priv_validator_key.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("validator key: %w", err)
	}
	var f struct {
		PubKey struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"pub_key"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return k, fmt.Errorf("%s: %w", path, err)
	}
	if f.PubKey.Type != ed25519.PubKeyName {
		return k, fmt.Errorf("%s: key type %q; the registry holds %s keys", path, f.PubKey.Type, ed25519.PubKeyName)
	}
	return ParseKey(f.PubKey.Value)
}

// LoadSigner reads the key that signs the registry's transactions: a file
// holding a hex private key, or a geth keystore file and its password file.
func LoadSigner(keyFile, keystoreFile, passwordFile string) (*ecdsa.PrivateKey, error) {
	switch {
	case keyFile != "" && keystoreFile != "":
		return nil, errors.New("--key-file and --keystore: give one")
	case keyFile != "":
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("--key-file: %w", err)
		}
		key, err := crypto.HexToECDSA(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"))
		if err != nil {
			return nil, fmt.Errorf("--key-file %s: %w (want a hex private key)", keyFile, err)
		}
		return key, nil
	case keystoreFile != "":
		b, err := os.ReadFile(keystoreFile)
		if err != nil {
			return nil, fmt.Errorf("--keystore: %w", err)
		}
		var pw []byte
		if passwordFile != "" {
			if pw, err = os.ReadFile(passwordFile); err != nil {
				return nil, fmt.Errorf("--password-file: %w", err)
			}
		}
		k, err := keystore.DecryptKey(b, strings.TrimRight(string(pw), "\r\n"))
		if err != nil {
			return nil, fmt.Errorf("--keystore %s: %w", keystoreFile, err)
		}
		return k.PrivateKey, nil
	}
	return nil, errors.New("no signing key: give --key-file (a hex private key) or --keystore and --password-file; the registry's owner must sign")
}

// Sender sends the registry's transactions.
type Sender struct {
	eth      *ethclient.Client
	key      *ecdsa.PrivateKey
	registry common.Address
	wait     time.Duration
}

// NewSender dials geth's RPC at url.
func NewSender(ctx context.Context, url string, key *ecdsa.PrivateKey, registry common.Address, wait time.Duration) (*Sender, error) {
	eth, err := ethclient.DialContext(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("--rpc-url %s: %w", url, err)
	}
	return &Sender{eth: eth, key: key, registry: registry, wait: wait}, nil
}

// Close closes the RPC connection.
func (s *Sender) Close() { s.eth.Close() }

// Receipt is what a change became.
type Receipt struct {
	Tx    common.Hash
	Block uint64 // the execution block, and CometBFT height, that holds it
}

// Send signs data as a call of the registry, sends it, and waits for its
// receipt. A call the registry would revert is refused before it is sent,
// with the contract's error ("NotOwner(0x…)").
func (s *Sender) Send(ctx context.Context, data []byte) (Receipt, error) {
	from := crypto.PubkeyToAddress(s.key.PublicKey)
	msg := ethereum.CallMsg{From: from, To: &s.registry, Data: data}
	gas, err := s.eth.EstimateGas(ctx, msg)
	if err != nil {
		return Receipt{}, s.explain(ctx, err)
	}
	chainID, err := s.eth.ChainID(ctx)
	if err != nil {
		return Receipt{}, err
	}
	nonce, err := s.eth.PendingNonceAt(ctx, from)
	if err != nil {
		return Receipt{}, err
	}
	tip, err := s.eth.SuggestGasTipCap(ctx)
	if err != nil {
		return Receipt{}, err
	}
	head, err := s.eth.HeaderByNumber(ctx, nil)
	if err != nil {
		return Receipt{}, err
	}
	feeCap := new(big.Int).Add(tip, new(big.Int).Mul(head.BaseFee, big.NewInt(2)))
	tx, err := types.SignNewTx(s.key, types.LatestSignerForChainID(chainID), &types.DynamicFeeTx{
		ChainID: chainID, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: gas + gas/4, To: &s.registry, Data: data,
	})
	if err != nil {
		return Receipt{}, err
	}
	if err := s.eth.SendTransaction(ctx, tx); err != nil {
		return Receipt{}, fmt.Errorf("send: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := s.eth.TransactionReceipt(ctx, tx.Hash())
		if err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return Receipt{}, fmt.Errorf("transaction %s reverted in block %d", tx.Hash(), r.BlockNumber)
			}
			return Receipt{Tx: tx.Hash(), Block: r.BlockNumber.Uint64()}, nil
		}
		select { // not found yet, or geth busy (indexing, restarting): ask again
		case <-ctx.Done():
			return Receipt{}, fmt.Errorf("transaction %s sent, not included within %s (--wait): is the chain making blocks? (last answer: %v)", tx.Hash(), s.wait, err)
		case <-tick.C:
		}
	}
}

// explain names the registry's error in a refused call.
func (s *Sender) explain(ctx context.Context, err error) error {
	var de rpc.DataError
	if errors.As(err, &de) {
		if h, ok := de.ErrorData().(string); ok {
			if why := registry.RevertReason(common.FromHex(h)); why != "" {
				if strings.HasPrefix(why, "NotOwner") {
					owner, _ := Owner(ctx, s.eth, s.registry)
					return fmt.Errorf("the registry refuses: %s: only its owner, %s, may change the set", why, owner)
				}
				return fmt.Errorf("the registry refuses: %s", why)
			}
		}
	}
	var rpcErr rpc.Error
	if errors.As(err, &rpcErr) { // geth answered: the call itself fails
		return fmt.Errorf("the registry call would fail: %w (is %s the registry? `validator list` reads it)", err, s.registry)
	}
	return fmt.Errorf("geth (--rpc-url): %w", err)
}

// Owner reads the registry's owner.
func Owner(ctx context.Context, eth *ethclient.Client, reg common.Address) (common.Address, error) {
	out, err := eth.CallContract(ctx, ethereum.CallMsg{To: &reg, Data: registry.OwnerCall()}, nil)
	if err != nil {
		return common.Address{}, err
	}
	if len(out) != 32 {
		return common.Address{}, fmt.Errorf("no registry at %s (owner() returned %d bytes)", reg, len(out))
	}
	return common.BytesToAddress(out), nil
}

// Entry is one validator key as CometBFT and the registry see it.
type Entry struct {
	PubKey   string `json:"pub_key"` // base64
	Address  string `json:"address"` // CometBFT's validator address
	CometBFT int64  `json:"cometbft_power"`
	Registry uint64 `json:"registry_power"`
	InReg    bool   `json:"in_registry"`
	// Status is "same", "removed" (by the registry, and from CometBFT's
	// set), "genesis" (a validator the registry never set: from CometBFT's
	// genesis) or "differs".
	Status string `json:"status"`
}

// Differs reports whether the registry set the key to another power than
// CometBFT's: a change of the last two heights, or one the validators
// refused (their logs say why).
func (e Entry) Differs() bool { return e.Status == "differs" }

// List reads CometBFT's current set (its RPC, cmtURL) and the registry's
// keys (geth's RPC, ethURL), and joins them by key. A key CometBFT holds
// that the registry never set is a genesis validator; any other
// disagreement is a change not (yet) applied: sent less than two heights
// ago, or refused by the validators (their logs say why).
func List(ctx context.Context, cmtURL, ethURL string, reg common.Address) (height int64, entries []Entry, err error) {
	c, err := rpchttp.New(cmtURL, "/websocket")
	if err != nil {
		return 0, nil, fmt.Errorf("--cmt-rpc %s: %w", cmtURL, err)
	}
	eth, err := ethclient.DialContext(ctx, ethURL)
	if err != nil {
		return 0, nil, fmt.Errorf("--rpc-url %s: %w", ethURL, err)
	}
	defer eth.Close()
	byKey := map[string]*Entry{}
	page, perPage := 1, 100
	for {
		res, err := c.Validators(ctx, nil, &page, &perPage)
		if err != nil {
			return 0, nil, fmt.Errorf("CometBFT's validators (--cmt-rpc %s): %w", cmtURL, err)
		}
		height = res.BlockHeight
		for _, v := range res.Validators {
			k := base64.StdEncoding.EncodeToString(v.PubKey.Bytes())
			byKey[k] = &Entry{PubKey: k, Address: v.Address.String(), CometBFT: v.VotingPower}
		}
		if page*perPage >= res.Total {
			break
		}
		page++
	}
	out, err := eth.CallContract(ctx, ethereum.CallMsg{To: &reg, Data: registry.KeysCall()}, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("the registry's keys() (--rpc-url %s, --registry %s): %w", ethURL, reg, err)
	}
	keys, powers, err := registry.UnpackKeys(out)
	if err != nil {
		return 0, nil, fmt.Errorf("--registry %s: %w", reg, err)
	}
	for i, key := range keys {
		k := base64.StdEncoding.EncodeToString(key[:])
		e, ok := byKey[k]
		if !ok {
			e = &Entry{PubKey: k, Address: ed25519.PubKey(key[:]).Address().String()}
			byKey[k] = e
		}
		e.Registry, e.InReg = powers[i], true
	}
	for _, e := range byKey {
		switch {
		case !e.InReg:
			e.Status = "genesis"
		case uint64(e.CometBFT) != e.Registry:
			e.Status = "differs"
		case e.CometBFT == 0:
			e.Status = "removed"
		default:
			e.Status = "same"
		}
		entries = append(entries, *e)
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].CometBFT != entries[j].CometBFT {
			return entries[i].CometBFT > entries[j].CometBFT
		}
		return entries[i].Address < entries[j].Address
	})
	return height, entries, nil
}

// Powers returns the voting power of each validator of CometBFT's set at
// height (nil: the latest), read from its RPC at cmtURL.
func Powers(ctx context.Context, cmtURL string, height *int64) (map[[32]byte]int64, error) {
	c, err := rpchttp.New(cmtURL, "/websocket")
	if err != nil {
		return nil, fmt.Errorf("--cmt-rpc %s: %w", cmtURL, err)
	}
	return votingPowers(ctx, c, height)
}

func votingPowers(ctx context.Context, c *rpchttp.HTTP, height *int64) (map[[32]byte]int64, error) {
	out := map[[32]byte]int64{}
	page, perPage := 1, 100
	for {
		res, err := c.Validators(ctx, height, &page, &perPage)
		if err != nil {
			return nil, fmt.Errorf("CometBFT's validators: %w", err)
		}
		for _, v := range res.Validators {
			out[[32]byte(v.PubKey.Bytes())] = v.VotingPower
		}
		if page*perPage >= res.Total {
			return out, nil
		}
		page++
	}
}

// Precheck refuses changes that the validators would refuse, judged
// against CometBFT's latest set and its block size (the validators judge
// them against the set of the height after the block that holds them:
// the same unless other changes come first).
func Precheck(ctx context.Context, cmtURL string, keys [][32]byte, powers []uint64) error {
	c, err := rpchttp.New(cmtURL, "/websocket")
	if err != nil {
		return fmt.Errorf("--cmt-rpc %s: %w", cmtURL, err)
	}
	var vals []*cmttypes.Validator
	var next int64 // the height these validators sign
	page, perPage := 1, 100
	for {
		res, err := c.Validators(ctx, nil, &page, &perPage)
		if err != nil {
			return fmt.Errorf("CometBFT's validators (--cmt-rpc %s): %w", cmtURL, err)
		}
		vals = append(vals, res.Validators...)
		next = res.BlockHeight
		if page*perPage >= res.Total {
			break
		}
		page++
	}
	set, err := cmttypes.ValidatorSetFromExistingValidators(vals)
	if err != nil {
		return err
	}
	// The parameters of the latest block, not of the next height (nil):
	// CometBFT stores the block before it stores the parameters that
	// follow it, and in between asking for the next height fails with
	// "could not find consensus params". The app never changes them.
	latest := max(next-1, 1)
	cp, err := c.ConsensusParams(ctx, &latest)
	if err != nil {
		return fmt.Errorf("CometBFT's consensus parameters (--cmt-rpc %s): %w", cmtURL, err)
	}
	p := cp.ConsensusParams
	changes := make([]registry.Change, len(keys))
	for i, k := range keys {
		changes[i] = registry.Change{PubKey: k, Power: powers[i]}
	}
	if err := app.CheckChanges(set, changes, envelope.MaxValidators(p.Block.MaxBytes, p.Evidence.MaxBytes)); err != nil {
		return fmt.Errorf("the validators would refuse this change: %w", err)
	}
	return nil
}

// Check waits until CometBFT (its RPC, cmtURL) has decided height, then
// reports each key whose power in the set of that height is not the one
// asked for: empty when CometBFT applied the change. The validators refuse
// a change whole, per transaction, so one key off means all were refused.
func Check(ctx context.Context, cmtURL string, height int64, keys [][32]byte, powers []uint64, wait time.Duration) ([]string, error) {
	c, err := rpchttp.New(cmtURL, "/websocket")
	if err != nil {
		return nil, fmt.Errorf("--cmt-rpc %s: %w", cmtURL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := c.Status(ctx)
		if err == nil && st.SyncInfo.LatestBlockHeight >= height {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("CometBFT (--cmt-rpc %s) did not reach height %d within %s (--wait): %v", cmtURL, height, wait, err)
		case <-tick.C:
		}
	}
	have, err := votingPowers(ctx, c, &height)
	if err != nil {
		return nil, err
	}
	var off []string
	for i, k := range keys {
		if got := have[k]; uint64(got) != powers[i] {
			off = append(off, fmt.Sprintf("%s has power %d, not %d", base64.StdEncoding.EncodeToString(k[:]), got, powers[i]))
		}
	}
	return off, nil
}
