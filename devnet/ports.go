package devnet

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// errNotOurs means a process answers on a port the devnet started one of
// its own on, and it is not that one: a system Redis or PostgreSQL, another
// geth, Anvil. Nothing is waited for then: the devnet must not drive it.
var errNotOurs = errors.New("another process answers on its port")

// checkPortsFree refuses to start when a port the network would take is
// already in use, naming the service, who probably holds it and the way
// out. Its text says "address already in use", as the servers' own logs
// do, so that a free-port network retries on other ports.
func (n *Network) checkPortsFree() error {
	var errs []error
	for _, g := range n.Geth {
		for _, port := range []int{g.HTTPPort, g.AuthPort, g.P2PPort, g.MetricsPort} {
			if port != 0 {
				errs = append(errs, n.checkPortFree(g.Name, port, "another geth, Anvil (8545), docker compose's geth or a Go program's pprof (6060)"))
			}
		}
	}
	if n.Redis != nil {
		errs = append(errs, n.checkPortFree("redis", n.Redis.Port, "probably a system Redis (sudo systemctl disable --now redis-server) or docker compose's"))
	}
	for _, pg := range n.Postgres {
		errs = append(errs, n.checkPortFree(pg.Name, pg.Port, "probably a system PostgreSQL (sudo systemctl disable --now postgresql) or docker compose's"))
	}
	return errors.Join(errs...)
}

// checkPortFree names service, the usual holder of its port and the way
// out when port is taken.
func (n *Network) checkPortFree(service string, port int, usual string) error {
	return portFree(service, port, usual, n.cfg.FreePorts)
}

func portFree(service string, port int, usual string, freePorts bool) error {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err == nil {
		l.Close()
		return nil
	}
	fix := "stop it"
	if !freePorts {
		fix += ", or start the devnet on free ports (devnet up --free-ports)"
	}
	return fmt.Errorf("port %d, for %s, is already in use (address already in use): %s; %s", port, service, usual, fix)
}
