package devnet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return l.Addr().String()
}

// roundTrip sends a line through c and returns its echo and how long it
// took, or an error once timeout has passed.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) (string, time.Duration, error) {
	start := time.Now()
	if err := c.SetDeadline(start.Add(timeout)); err != nil {
		return "", 0, err
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", 0, err
	}
	got, err := r.ReadString('\n')
	return strings.TrimSpace(got), time.Since(start), err
}

// A link passes a stream through; cut, nothing crosses and the connection
// stays open; healed, what was held arrives; latency and loss delay each
// way; one-way cuts hold one direction only; and each fault is listed.
func TestLinkFaults(t *testing.T) {
	f := NewFaults()
	t.Cleanup(f.Close)
	l, err := f.Link("echo", "127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Link("echo", "127.0.0.1:0", l.Upstream); err == nil {
		t.Fatal("a second link of the same name was created")
	}
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, _, err := roundTrip(c, r, "hello", 2*time.Second); err != nil || got != "hello" {
		t.Fatalf("through the link: %q, %v", got, err)
	}

	// Cut: the round trip times out, the connection stays.
	if err := l.Apply(Cut()); err != nil {
		t.Fatal(err)
	}
	if got := l.Faults(); !slices.Equal(got, []string{"cut_downstream", "cut_upstream"}) {
		t.Fatalf("faults %v", got)
	}
	if _, _, err := roundTrip(c, r, "held", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("through a cut link: %v, want a timeout", err)
	}
	// Cut again: it stays cut, with no moment healed.
	if err := l.Apply(Cut()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut twice, the held line came through: %v", err)
	}
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || strings.TrimSpace(got) != "held" {
		t.Fatalf("after the heal: %q, %v; want the held line", got, err)
	}

	// Latency each way: a round trip takes at least twice the latency.
	if err := l.Apply(Latency(100*time.Millisecond, 10*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, took, err := roundTrip(c, r, "slow", 3*time.Second); err != nil || took < 180*time.Millisecond {
		t.Fatalf("with 100±10 ms each way: a round trip in %s (%v)", took, err)
	}
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}

	// Loss of every chunk: each way waits a retransmission timeout.
	if err := l.Apply(Loss(1)); err != nil {
		t.Fatal(err)
	}
	if _, took, err := roundTrip(c, r, "lossy", 3*time.Second); err != nil || took < 2*lossRTO {
		t.Fatalf("with every chunk lost once: a round trip in %s (%v)", took, err)
	}
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}

	// One way: the answers are held, not the requests.
	if err := l.Apply(CutOneWay(Down)); err != nil {
		t.Fatal(err)
	}
	if got := l.Faults(); !slices.Equal(got, []string{"cut_downstream"}) {
		t.Fatalf("faults %v", got)
	}
	if _, _, err := roundTrip(c, r, "one way", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("answers cut: %v, want a timeout", err)
	}
	if err := f.HealAll(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || strings.TrimSpace(got) != "one way" {
		t.Fatalf("after the heal: %q, %v", got, err)
	}
	if got := l.Faults(); len(got) != 0 {
		t.Fatalf("faults after HealAll: %v", got)
	}

	for _, bad := range []Fault{{Kind: "fire"}, {Kind: "cut", Direction: "sideways"}, Latency(500*time.Microsecond, 0), Loss(1.5), Bandwidth(0)} {
		if err := l.Apply(bad); err == nil {
			t.Errorf("fault %+v accepted", bad)
		}
	}
	if _, err := f.Get("nope"); err == nil || !strings.Contains(err.Error(), "echo") {
		t.Errorf("an unknown link: %v, want the known ones named", err)
	}
}

// With Config.Faults the geths peer through fault points, one per
// direction of each pair, and GethLinks names a geth's.
func TestGethPeeringThroughFaults(t *testing.T) {
	SkipIfShort(t)
	f := NewFaults()
	t.Cleanup(f.Close)
	n := StartT(t, Config{GethNodes: 2, Faults: f})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.WaitPeered(ctx, 1); err != nil {
		t.Fatal(err)
	}
	links := n.GethLinks(0)
	if len(links) != 2 {
		t.Fatalf("geth-0's links: %d, want 2 (to and from geth-1)", len(links))
	}
	ports := map[string]bool{}
	for _, l := range links {
		ports[strconv.Itoa(l.Port())] = true
	}
	// The geth that dialled sees a link's port as its peer's; neither sees
	// the other's own p2p port there (a direct connection).
	var peers []struct {
		Network struct{ RemoteAddress string }
	}
	viaLink := false
	for i, g := range n.Geth {
		raw, err := g.Call(ctx, "admin_peers")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &peers); err != nil || len(peers) != 1 {
			t.Fatalf("geth-%d peers %s (%v)", i, raw, err)
		}
		_, remote, _ := net.SplitHostPort(peers[0].Network.RemoteAddress)
		if remote == strconv.Itoa(n.Geth[1-i].P2PPort) {
			t.Fatalf("geth-%d peers with geth-%d directly, on its p2p port %s", i, 1-i, remote)
		}
		viaLink = viaLink || ports[remote]
	}
	if !viaLink {
		t.Fatalf("no geth dialled through a link (ports %v)", ports)
	}
}
