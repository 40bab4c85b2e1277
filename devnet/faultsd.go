package devnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/p2p/enode"
	"github.com/rs/zerolog"
)

// LinkSpec is a fault point as the devnet CLI records it: clients dial
// Listen instead of Upstream.
type LinkSpec struct {
	Name, Listen, Upstream string
}

// String is the form the faults process takes on its command line.
func (l LinkSpec) String() string { return l.Name + "=" + l.Listen + ">" + l.Upstream }

// ParseLinkSpec reads "name=listen>upstream".
func ParseLinkSpec(s string) (LinkSpec, error) {
	name, rest, ok1 := strings.Cut(s, "=")
	listen, upstream, ok2 := strings.Cut(rest, ">")
	if !ok1 || !ok2 || name == "" || listen == "" || upstream == "" {
		return LinkSpec{}, fmt.Errorf("link %q: want name=listen>upstream, as redis=127.0.0.1:16379>127.0.0.1:6379", s)
	}
	return LinkSpec{Name: name, Listen: listen, Upstream: upstream}, nil
}

// FaultsAPIPort is where `devnet up --faults` serves toxiproxy's API
// (toxiproxy's own default), and linkOffset what it adds to a server's
// port for the port of its link: 18551 for geth-0's Engine API on 8551.
const (
	FaultsAPIPort = 8474
	linkOffset    = 10000
)

// FaultLinks are the fault points `devnet up --faults` puts in front of
// the network s records: each geth's Engine API and RPC, Redis, each
// PostgreSQL, and the peering of each pair of geths (geth-<i>-geth-<j>:
// geth i dials geth j through it, on a free port). A client that dials a
// link's port instead of the server's can then be cut off from it, or
// slowed. On free ports (tests) each link gets a free port too.
func FaultLinks(s *State) ([]LinkSpec, error) {
	var links []LinkSpec
	add := func(name, upstream string, free bool) error {
		host, port, err := net.SplitHostPort(upstream)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		p, _ := strconv.Atoi(port)
		listen := p + linkOffset
		if s.FreePorts || free {
			if listen, err = FreePort(); err != nil {
				return err
			}
		}
		links = append(links, LinkSpec{Name: name, Listen: net.JoinHostPort(host, strconv.Itoa(listen)), Upstream: upstream})
		return nil
	}
	hostOf := func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil {
			return raw
		}
		return u.Host
	}
	for _, g := range s.Geth {
		if err := add(g.Name+"-engine", hostOf(g.Engine), false); err != nil {
			return nil, err
		}
		if err := add(g.Name+"-rpc", hostOf(g.RPC), false); err != nil {
			return nil, err
		}
	}
	for i := range s.Geth {
		for j, o := range s.Geth {
			if i == j {
				continue
			}
			n, err := enode.ParseV4(o.Enode)
			if err != nil {
				return nil, fmt.Errorf("%s's enode %q: %w", o.Name, o.Enode, err)
			}
			if err := add(peerLink(i, j), fmt.Sprintf("127.0.0.1:%d", n.TCP()), true); err != nil {
				return nil, err
			}
		}
	}
	if s.Redis != "" {
		if err := add("redis", s.Redis, false); err != nil {
			return nil, err
		}
	}
	for i, pg := range s.Postgres {
		if err := add(fmt.Sprintf("postgres-%d", i), hostOf(pg), false); err != nil {
			return nil, err
		}
	}
	return links, nil
}

// peerLink names the link geth i dials geth j through, as Config.Faults
// does in process.
func peerLink(i, j int) string { return fmt.Sprintf("geth-%d-geth-%d", i, j) }

// peerThroughLinks makes the geths of s peer through their links: each
// drops its direct peers, then dials the others through geth-<i>-geth-<j>
// (admin RPC; with --nodiscover they do not find each other again). It
// returns once every geth peers with every other through a link: geth
// redials a node at most every 35 s, so that takes up to 35 s after the
// geths started.
func peerThroughLinks(ctx context.Context, s *State, links []LinkSpec) error {
	if len(s.Geth) < 2 {
		return nil
	}
	listen := map[string]string{}
	for _, l := range links {
		listen[l.Name] = l.Listen
	}
	nodes := make([]*enode.Node, len(s.Geth))
	for j, o := range s.Geth {
		n, err := enode.ParseV4(o.Enode)
		if err != nil {
			return fmt.Errorf("%s's enode %q: %w", o.Name, o.Enode, err)
		}
		nodes[j] = n
	}
	// Every link first: a geth must not lose its direct peers for links
	// that are not there.
	via := map[[2]int]string{}
	for i := range s.Geth {
		for j := range s.Geth {
			if i == j {
				continue
			}
			host, port, err := net.SplitHostPort(listen[peerLink(i, j)])
			if err != nil {
				return fmt.Errorf("no link %s: %w (run devnet down, then up --faults)", peerLink(i, j), err)
			}
			p, _ := strconv.Atoi(port)
			via[[2]int{i, j}] = enode.NewV4(nodes[j].Pubkey(), net.ParseIP(host), p, 0).URLv4()
		}
	}
	for _, method := range []string{"admin_removePeer", "admin_addPeer"} {
		for i, g := range s.Geth {
			for j := range s.Geth {
				if i == j {
					continue
				}
				peer := via[[2]int{i, j}]
				if method == "admin_removePeer" {
					peer = nodes[j].URLv4()
				}
				var ok bool
				if err := callInto(ctx, g.RPC, &ok, method, peer); err != nil {
					return err
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		direct, peers, err := peering(ctx, s)
		if err != nil {
			return err
		}
		if !direct && peers == len(s.Geth)*(len(s.Geth)-1) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the geths do not peer through their links within a minute (%d of %d peerings, direct ones left: %t)",
				peers, len(s.Geth)*(len(s.Geth)-1), direct)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// peering reports whether any two geths of s are connected directly (one
// sees the other's p2p port as its peer's address) and how many peers
// they have in all.
func peering(ctx context.Context, s *State) (direct bool, peers int, err error) {
	p2p := map[string]bool{}
	for _, g := range s.Geth {
		n, err := enode.ParseV4(g.Enode)
		if err != nil {
			return false, 0, err
		}
		p2p[strconv.Itoa(n.TCP())] = true
	}
	for _, g := range s.Geth {
		var got []struct {
			Network struct{ RemoteAddress string }
		}
		if err := callInto(ctx, g.RPC, &got, "admin_peers"); err != nil {
			return false, 0, err
		}
		peers += len(got)
		for _, p := range got {
			_, port, _ := net.SplitHostPort(p.Network.RemoteAddress)
			direct = direct || p2p[port]
		}
	}
	return direct, peers, nil
}

// callInto makes one JSON-RPC call to a geth and decodes its result.
func callInto(ctx context.Context, url string, result any, method string, args ...any) error {
	raw, err := rpcCall(ctx, url, method, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	return json.Unmarshal(raw, result)
}

// PeerThroughFaults makes the geths of the network in dir peer through
// the fault points its faults process runs again: a geth restarted by
// hand since peers directly.
func PeerThroughFaults(ctx context.Context, dir string) error {
	s, err := ReadState(dir)
	if err != nil {
		return err
	}
	if s.Faults == "" || len(s.Geth) < 2 {
		return nil
	}
	if direct, _, err := peering(ctx, s); err != nil || !direct {
		return err
	}
	return peerThroughLinks(ctx, s, s.FaultLinks)
}

// ServeFaults runs links and toxiproxy's API on api (host:port) until the
// process ends: the faults process of `devnet up --faults`.
func ServeFaults(api string, links []LinkSpec) error {
	// toxiproxy's warnings (held data it could not deliver at a heal, an
	// API that cannot bind) go to the process's log, faults.log.
	f := newFaults(zerolog.New(os.Stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger())
	for _, l := range links {
		if _, err := f.Link(l.Name, l.Listen, l.Upstream); err != nil {
			return err
		}
	}
	host, port, err := net.SplitHostPort(api)
	if err != nil {
		return fmt.Errorf("--api %q: %w", api, err)
	}
	f.Serve(host, port)
	return nil
}

// StartFaultsIn starts the faults process (exe faults-serve: the devnet
// CLI), detached, in front of the network the CLI left running in dir, in
// place of one that runs there, waits until its API and links answer, and
// records it in the state file.
func StartFaultsIn(ctx context.Context, dir, exe string) error {
	s, err := ReadState(dir)
	if err != nil {
		return err
	}
	pidPath := filepath.Join(dir, "faults.pid")
	if err := StopPIDFile(pidPath, 15*time.Second); err != nil {
		return err
	}
	links, err := FaultLinks(s)
	if err != nil {
		return err
	}
	api := fmt.Sprintf("127.0.0.1:%d", FaultsAPIPort)
	if s.FreePorts {
		p, err := FreePort()
		if err != nil {
			return err
		}
		api = fmt.Sprintf("127.0.0.1:%d", p)
	}
	if err := checkPortFree(api, "the faults API"); err != nil {
		return err
	}
	args := []string{"faults-serve", "--api", api}
	for _, l := range links {
		if err := checkPortFree(l.Listen, "link "+l.Name); err != nil {
			return err
		}
		args = append(args, "--link", l.String())
	}
	p := &Process{Name: "faults", Path: exe, Args: args, LogPath: filepath.Join(dir, "faults.log"), PIDPath: pidPath, Detach: true}
	if err := p.Start(); err != nil {
		return err
	}
	apiURL := "http://" + api
	if err := waitFor(ctx, p, func() error {
		resp, err := http.Get(apiURL + "/version")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}); err != nil {
		_ = p.Stop(5 * time.Second)
		return err
	}
	if err := peerThroughLinks(ctx, s, links); err != nil {
		_ = p.Stop(5 * time.Second)
		return fmt.Errorf("route the geths' peering through the fault points: %w", err)
	}
	s.Faults, s.FaultLinks = apiURL, links
	if !slices.Contains(s.PIDFiles, pidPath) {
		s.PIDFiles = append(s.PIDFiles, pidPath)
	}
	return s.write(dir)
}

// checkPortFree refuses an address something already listens on.
func checkPortFree(addr, what string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %s is taken (%v): stop what listens there, or use --free-ports", what, addr, err)
	}
	return l.Close()
}
