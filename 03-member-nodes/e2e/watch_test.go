package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `devnet watch` (the devnet CLI, built from the module this stage's tests
// already use) shows the running cluster: one line per node with its role,
// the leader, its head and readiness; after the leader's SIGKILL, the old
// leader is down and the other candidate leads.
func TestDevnetWatchShowsTheCluster(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "devnet")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/geth-consensus/tutorial/devnet/cmd/devnet").CombinedOutput(); err != nil {
		t.Fatalf("build the devnet CLI: %v\n%s", err, out)
	}
	c := newCluster(t, 2, 1, nil)
	leader := c.waitLeader(20*time.Second, nil)
	c.waitHeads(5, 30*time.Second)
	var addrs []string
	for _, cn := range c.nodes {
		addrs = append(addrs, cn.cfg.HealthAddr)
	}
	watch := func() map[string]string { // node id → its line
		out, err := exec.Command(bin, "watch", "--frames", "1", "--nodes", strings.Join(addrs, ",")).CombinedOutput()
		if err != nil {
			t.Fatalf("devnet watch: %v\n%s", err, out)
		}
		lines := map[string]string{}
		for i, cn := range c.nodes {
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, addrs[i]+" ") {
					lines[cn.cfg.InstanceID] = line
				}
			}
		}
		t.Logf("devnet watch:\n%s", out)
		return lines
	}
	eventually(t, 10*time.Second, func() error { // every node ready, in one refresh
		for id, line := range watch() {
			if f := strings.Fields(line); len(f) < 8 || f[7] != "yes" {
				return &notReady{id, line}
			}
		}
		return nil
	})
	lines := watch()
	for _, cn := range c.nodes {
		role := "candidate"
		switch {
		case cn == leader:
			role = "leader"
		case cn.cfg.Mode == "member":
			role = "member"
		}
		f := strings.Fields(lines[cn.cfg.InstanceID])
		if len(f) < 8 || f[1] != cn.cfg.InstanceID || f[2] != role || f[3] != leader.cfg.InstanceID {
			t.Errorf("%s: %q; want id, role %s, leader %s", cn.cfg.InstanceID, lines[cn.cfg.InstanceID], role, leader.cfg.InstanceID)
		}
	}
	if err := leader.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	next := c.waitLeader(10*time.Second, leader)
	eventually(t, 10*time.Second, func() error {
		lines := watch()
		if f := strings.Fields(lines[next.cfg.InstanceID]); len(f) < 3 || f[2] != "leader" {
			return &notReady{next.cfg.InstanceID, lines[next.cfg.InstanceID]}
		}
		if !strings.Contains(lines[leader.cfg.InstanceID], " down ") {
			return &notReady{leader.cfg.InstanceID, lines[leader.cfg.InstanceID]}
		}
		return nil
	})
}

type notReady struct{ id, line string }

func (e *notReady) Error() string { return e.id + ": " + e.line }
