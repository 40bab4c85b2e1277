package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/valset"
)

// TestValidatorSetChanges changes the set from the chain, through the
// validator command and the registry contract: four validators and a full
// node that follows the chain; the full node is added and votes from the
// height CometBFT says; a transaction removing two of the five at once is
// refused by every validator alike; one of the original four is stopped,
// removed while offline, and the chain goes on; restarted, it follows as a
// full node. Every geth and block store agree.
func TestValidatorSetChanges(t *testing.T) {
	nw := newNetwork(t, spec{fullNodes: 1})
	fifth, gone := nw.vals[4], nw.vals[3]
	nw.waitHeads(3, 90*time.Second) // the full node follows too
	ctx := context.Background()
	c := nw.vals[0].cometbft(t)
	dir := t.TempDir()
	keyFile := func(i int) string {
		p := filepath.Join(dir, fmt.Sprintf("dev-%d.key", i))
		if err := os.WriteFile(p, []byte(devnet.DevKeys[i]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	owner, intruder := keyFile(0), keyFile(1)
	cli := func(args ...string) (string, error) {
		args = append([]string{"validator"}, args...)
		args = append(args, "--rpc-url", nw.vals[0].geth.RPCURL(), "--cmt-rpc", fmt.Sprintf("tcp://127.0.0.1:%d", nw.vals[0].rpc))
		out, err := exec.Command(binary(t), args...).CombinedOutput()
		return string(out), err
	}
	included := regexp.MustCompile(`in block (\d+);`)
	send := func(args ...string) int64 {
		t.Helper()
		out, err := cli(args...)
		m := included.FindStringSubmatch(out)
		if err != nil || m == nil || !strings.Contains(out, "applied: CometBFT's set at height") {
			t.Fatalf("validator %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("validator %s: %s", args[0], strings.TrimSpace(out))
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	address := func(v *validator) string {
		s, ok := v.status()
		if !ok {
			t.Fatalf("validator-%d: no /status", v.i)
		}
		return s.Validator
	}
	inSet := func(h int64, addr string) bool {
		t.Helper()
		set, err := cometSets(ctx, c)(h)
		if err != nil {
			t.Fatalf("CometBFT's set at %d: %v", h, err)
		}
		return set.HasAddress(mustHex(t, addr))
	}

	// Only the owner may change the set: refused before anything is sent.
	if out, err := cli("add", fifth.home, "100", "--key-file", intruder); err == nil || !strings.Contains(out, "NotOwner") || strings.Contains(out, "included") {
		t.Fatalf("a non-owner's add: %v\n%s", err, out)
	}

	// The full node is added: in CometBFT's set from the block's height
	// + 2, and it signs the commits of the heights after.
	addr5 := address(fifth)
	n := send("add", fifth.home, "100", "--key-file", owner)
	nw.waitHeads(uint64(n)+6, 60*time.Second, nw.vals[:4]...)
	if inSet(n+1, addr5) || !inSet(n+2, addr5) {
		t.Fatalf("added in block %d: in CometBFT's set at %d: %v, at %d: %v; want from %d", n, n+1, inSet(n+1, addr5), n+2, inSet(n+2, addr5), n+2)
	}
	// A precommit that arrives after the next proposal is made is left out
	// of the commit: a loaded machine may drop the first one or two.
	first := firstSigned(t, c, addr5, n-2, n+6)
	if first < n+2 || first > n+5 {
		t.Fatalf("the added validator first signed the commit of height %d; it is a validator from %d", first, n+2)
	}
	t.Logf("MEASURED added in block %d: validator from height %d, first signature in the commit of height %d", n, n+2, first)

	// Removing two of the five at once is more than a third of the power:
	// every validator refuses the transaction, and the set stays.
	// The command refuses it before sending; sent all the same (the
	// registry takes it), every validator refuses it.
	out, err := cli("remove", nw.vals[1].home, nw.vals[2].home, "--key-file", owner)
	if err == nil || !strings.Contains(out, "the validators would refuse this change") || included.MatchString(out) {
		t.Fatalf("validator remove of two of five: %v\n%s", err, out)
	}
	ownerKey, _ := devnet.DevKey(0)
	s, err := valset.NewSender(ctx, nw.vals[0].geth.RPCURL(), ownerKey, registry.Address, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Send(ctx, registry.SetPowers([][32]byte{homeKey(t, nw.vals[1]), homeKey(t, nw.vals[2])}, []uint64{0, 0}))
	if err != nil {
		t.Fatal(err)
	}
	m := int64(r.Block)
	nw.waitHeads(uint64(m)+4, 60*time.Second, nw.vals[:4]...)
	if !inSet(m+2, address(nw.vals[1])) || !inSet(m+2, address(nw.vals[2])) {
		t.Fatalf("the refused removal in block %d took effect", m)
	}
	for _, v := range nw.vals {
		eventually(t, 10*time.Second, func() error {
			if got := v.metricWhere("gethcl_validator_updates_total", `outcome="refused"`); got != 2 {
				return fmt.Errorf("validator-%d: %v updates refused, want 2", v.i, got)
			}
			return nil
		})
	}
	list := listSet(t, cli)
	for _, e := range list {
		switch e.Address {
		case addr5:
			if e.Status != "same" || e.CometBFT != 100 || e.Registry != 100 {
				t.Errorf("the added validator in the list: %+v", e)
			}
		case address(nw.vals[1]), address(nw.vals[2]):
			if e.Status != "differs" || e.CometBFT != 100 || e.Registry != 0 {
				t.Errorf("a validator whose removal was refused, in the list: %+v", e)
			}
		default:
			if e.Status != "genesis" {
				t.Errorf("a genesis validator in the list: %+v", e)
			}
		}
	}

	// One of the original four is stopped, then removed while it is
	// offline: the other four (4 of the 5 power) go on. Restarted, it
	// catches up from the others and follows the chain as a full node.
	addrGone := address(gone)
	if err := gone.proc.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	live := []*validator{nw.vals[0], nw.vals[1], nw.vals[2], fifth}
	k := send("remove", gone.home, "--key-file", owner)
	nw.waitHeads(uint64(k)+3, 60*time.Second, live...)
	if !inSet(k+1, addrGone) || inSet(k+2, addrGone) {
		t.Fatalf("removed in block %d: in CometBFT's set at %d: %v, at %d: %v", k, k+1, inSet(k+1, addrGone), k+2, inSet(k+2, addrGone))
	}
	nw.start(gone)
	top := mustHead(t, nw.vals[0])
	nw.waitHeads(top+10, 90*time.Second)
	if got := firstSigned(t, c, addrGone, k+2, int64(top)+10); got != 0 {
		t.Fatalf("the removed validator signed the commit of height %d", got)
	}
	if got := firstSigned(t, c, addr5, int64(top), int64(top)+10); got == 0 {
		t.Fatal("the added validator signs no commit after the removal")
	}
	eventually(t, 30*time.Second, func() error {
		if s, ok := gone.status(); !ok || !s.Ready || s.Height < int64(top) {
			return fmt.Errorf("the removed validator, restarted: /status %+v (ok %v)", s, ok)
		}
		return nil
	})
	// The added validator proposes, and its app predicted its turns: it
	// built payloads before they were due that the chain used.
	if used := fifth.metricWhere("gethcl_optimistic_builds_total", `outcome="used"`); used < 1 {
		t.Errorf("the added validator used %v payloads started early: its app did not predict its turns", used)
	}
	for _, v := range nw.vals {
		if got := v.metric("gethcl_validators"); got != 4 {
			t.Errorf("validator-%d: gethcl_validators %v, want 4", v.i, got)
		}
	}

	low := nw.checkSameChain()
	nw.checkSameBlocks(int64(low), nw.vals...)
	nw.checkProposers(int64(low))
}

// firstSigned returns the first height in [from, to] whose commit holds a
// signature of the validator at addr (hex), or 0.
func firstSigned(t testing.TB, c *rpchttp.HTTP, addr string, from, to int64) int64 {
	t.Helper()
	for h := max(from, 1); h <= to; h++ {
		commit, err := c.Commit(context.Background(), &h)
		if err != nil {
			t.Fatalf("commit of height %d: %v", h, err)
		}
		for _, sig := range commit.Commit.Signatures {
			if sig.BlockIDFlag == cmttypes.BlockIDFlagCommit && sig.ValidatorAddress.String() == addr {
				return h
			}
		}
	}
	return 0
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// homeKey is the validator's public key, from its home.
func homeKey(t *testing.T, v *validator) [32]byte {
	t.Helper()
	k, err := valset.ParseKey(v.home)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// listSet runs `validator list --json`.
func listSet(t *testing.T, cli func(...string) (string, error)) []valset.Entry {
	t.Helper()
	out, err := cli("list", "--json")
	if err != nil {
		t.Fatalf("validator list: %v\n%s", err, out)
	}
	var l struct {
		Height     int64          `json:"height"`
		Validators []valset.Entry `json:"validators"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("validator list --json: %v\n%s", err, out)
	}
	t.Logf("validator list at height %d: %+v", l.Height, l.Validators)
	return l.Validators
}
