package devnet

import (
	"context"
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
	return LinkSpec{name, listen, upstream}, nil
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
// PostgreSQL. A client that dials a link's port instead of the server's
// can then be cut off from it, or slowed. On free ports (tests) each link
// gets a free port too.
func FaultLinks(s *State) ([]LinkSpec, error) {
	var links []LinkSpec
	add := func(name, upstream string) error {
		host, port, err := net.SplitHostPort(upstream)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		p, _ := strconv.Atoi(port)
		listen := p + linkOffset
		if s.FreePorts {
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
		if err := add(g.Name+"-engine", hostOf(g.Engine)); err != nil {
			return nil, err
		}
		if err := add(g.Name+"-rpc", hostOf(g.RPC)); err != nil {
			return nil, err
		}
	}
	if s.Redis != "" {
		if err := add("redis", s.Redis); err != nil {
			return nil, err
		}
	}
	for i, pg := range s.Postgres {
		if err := add(fmt.Sprintf("postgres-%d", i), hostOf(pg)); err != nil {
			return nil, err
		}
	}
	return links, nil
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
