package devnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Faults are the fault points of a network: each Link is a TCP proxy that
// a client dials instead of its server, and through which the link can be
// cut, slowed, throttled or made lossy, then healed. They are Shopify's
// toxiproxy, embedded: tests hold them in process; `devnet up --faults`
// runs them in a process of their own, which `devnet fault` drives through
// toxiproxy's HTTP API.
//
// A proxy works on the bytes of a TCP stream, not on packets: a cut holds
// the stream (nothing crosses; the connections stay open, as through a
// partition that TCP rides out, and what was held flows on once healed),
// and loss delays a chunk by a retransmission timeout, as a lost segment
// delays TCP, rather than dropping it.
type Faults struct {
	api *toxiproxy.ApiServer

	mu    sync.Mutex
	links map[string]*Link
}

// NewFaults returns an empty set of fault points.
func NewFaults() *Faults { return newFaults(zerolog.Nop()) }

// newFaults logs toxiproxy's own messages to logger.
func newFaults(logger zerolog.Logger) *Faults {
	metrics := toxiproxy.NewMetricsContainer(prometheus.NewRegistry())
	return &Faults{api: toxiproxy.NewServer(metrics, logger), links: map[string]*Link{}}
}

// Link creates the fault point name in front of upstream (host:port),
// listening on listen ("127.0.0.1:0": a free port; Addr says which).
func (f *Faults) Link(name, listen, upstream string) (*Link, error) {
	if name == "" || strings.ContainsAny(name, " /") {
		return nil, fmt.Errorf("link name %q: want a word, as geth-0-engine", name)
	}
	p := toxiproxy.NewProxy(f.api, name, listen, upstream)
	if err := f.api.Collection.Add(p, true); err != nil {
		return nil, fmt.Errorf("link %s (%s → %s): %w", name, listen, upstream, err)
	}
	l := &Link{Name: name, Upstream: upstream, proxy: p}
	f.mu.Lock()
	f.links[name] = l
	f.mu.Unlock()
	return l, nil
}

// Remove stops and forgets the link called name, if there is one.
func (f *Faults) Remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[name]; ok {
		_ = f.api.Collection.Remove(name)
		delete(f.links, name)
	}
}

// Get returns the link called name.
func (f *Faults) Get(name string) (*Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		names := make([]string, 0, len(f.links))
		for n := range f.links {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no link %q (links: %s)", name, strings.Join(names, ", "))
	}
	return l, nil
}

// Links returns every link, by name.
func (f *Faults) Links() []*Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*Link, 0, len(f.links))
	for _, l := range f.links {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// HealAll removes every fault from every link.
func (f *Faults) HealAll() error {
	var errs []error
	for _, l := range f.Links() {
		errs = append(errs, l.Heal())
	}
	return errors.Join(errs...)
}

// Close stops every link: their connections close.
func (f *Faults) Close() {
	_ = f.api.Collection.Clear()
}

// Serve answers toxiproxy's HTTP API on host:port until the process ends
// (for `devnet up --faults`; toxiproxy's own clients work too).
func (f *Faults) Serve(host, port string) {
	f.api.Listen(host, port)
}

// Link is one fault point: clients dial Addr, and it forwards to Upstream.
type Link struct {
	Name     string
	Upstream string
	proxy    *toxiproxy.Proxy
}

// Addr is where clients dial the link (host:port).
func (l *Link) Addr() string {
	l.proxy.Lock()
	defer l.proxy.Unlock()
	return l.proxy.Listen
}

// Port is Addr's port.
func (l *Link) Port() int {
	var port int
	_, _ = fmt.Sscanf(l.Addr()[strings.LastIndexByte(l.Addr(), ':')+1:], "%d", &port)
	return port
}

// Direction is which way a fault acts: Up is what the client sends to the
// server, Down what the server sends back.
type Direction string

const (
	Up   Direction = "upstream"
	Down Direction = "downstream"
	Both Direction = "both"
)

// Fault is one kind of harm done to a link, in one direction or both.
type Fault struct {
	Kind      string         // cut, latency, bandwidth, loss
	Direction Direction      // Both when empty
	Attrs     map[string]any // the toxic's attributes
}

// Cut holds everything both ways (a partition); CutOneWay one way only.
func Cut() Fault                  { return Fault{Kind: "cut"} }
func CutOneWay(d Direction) Fault { return Fault{Kind: "cut", Direction: d} }
func Latency(d, jitter time.Duration) Fault { // each way
	return Fault{Kind: "latency", Attrs: map[string]any{"latency": d.Milliseconds(), "jitter": jitter.Milliseconds()}}
}

// Bandwidth limits each way to kbps kilobytes a second.
func Bandwidth(kbps int64) Fault {
	return Fault{Kind: "bandwidth", Attrs: map[string]any{"rate": kbps}}
}

// Loss makes each way lose that fraction of its chunks (0-1), each delayed
// by a retransmission timeout (lossRTO), as TCP resends a lost segment.
func Loss(rate float64) Fault {
	return Fault{Kind: "loss", Attrs: map[string]any{"rate": rate}}
}

// toxicType maps a fault kind to its toxic.
var toxicType = map[string]string{"cut": "partition", "latency": "latency", "bandwidth": "bandwidth", "loss": "loss"}

// Toxics are the toxics a fault adds: one per direction, named kind_stream.
func (f Fault) Toxics() ([]ToxicSpec, error) {
	typ, ok := toxicType[f.Kind]
	if !ok {
		return nil, fmt.Errorf("fault %q: want cut, latency, bandwidth or loss", f.Kind)
	}
	switch f.Kind {
	case "latency":
		if d, _ := f.Attrs["latency"].(int64); d < 1 {
			return nil, errors.New("latency: at least 1ms (the proxy counts whole milliseconds)")
		}
	case "loss":
		if r, _ := f.Attrs["rate"].(float64); r < 0 || r > 1 {
			return nil, fmt.Errorf("loss rate %v: want a fraction from 0 to 1", r)
		}
	case "bandwidth":
		if k, _ := f.Attrs["rate"].(int64); k < 1 {
			return nil, errors.New("bandwidth: at least 1 KB/s")
		}
	}
	dirs := []Direction{Up, Down}
	switch f.Direction {
	case "", Both:
	case Up, Down:
		dirs = []Direction{f.Direction}
	default:
		return nil, fmt.Errorf("direction %q: want upstream, downstream or both", f.Direction)
	}
	out := make([]ToxicSpec, len(dirs))
	for i, d := range dirs {
		out[i] = ToxicSpec{Name: f.Kind + "_" + string(d), Type: typ, Stream: string(d), Toxicity: 1, Attributes: f.Attrs}
	}
	return out, nil
}

// ToxicSpec is a toxic as toxiproxy's API takes it.
type ToxicSpec struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// Apply adds fault to the link. A fault of the same kind and direction
// already there is changed in place, never removed first: a link cut
// again stays cut, with no moment healed.
func (l *Link) Apply(f Fault) error {
	specs, err := f.Toxics()
	if err != nil {
		return err
	}
	for _, s := range specs {
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if old := l.proxy.Toxics.GetToxic(s.Name); old != nil {
			_, err = l.proxy.Toxics.UpdateToxicJson(s.Name, bytes.NewReader(b))
		} else {
			_, err = l.proxy.Toxics.AddToxicJson(bytes.NewReader(b))
		}
		if err != nil {
			return fmt.Errorf("link %s: %s %s: %w", l.Name, f.Kind, s.Stream, err)
		}
	}
	return nil
}

// Heal removes every fault from the link.
func (l *Link) Heal() error {
	var errs []error
	for _, name := range l.toxicNames() {
		if err := l.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
			errs = append(errs, fmt.Errorf("link %s: heal %s: %w", l.Name, name, err))
		}
	}
	return errors.Join(errs...)
}

// Faults describes the faults on the link, one "kind_stream" each.
func (l *Link) Faults() []string { return l.toxicNames() }

func (l *Link) toxicNames() []string {
	var names []string
	for _, d := range []Direction{Up, Down} {
		for kind := range toxicType {
			if l.proxy.Toxics.GetToxic(kind+"_"+string(d)) != nil {
				names = append(names, kind+"_"+string(d))
			}
		}
	}
	slices.Sort(names)
	return names
}

// lossRTO is how long a "lost" chunk waits: Linux's minimum TCP
// retransmission timeout.
const lossRTO = 200 * time.Millisecond

// partitionToxic holds every chunk until removed: nothing crosses, the
// connection stays open, and what was held flows on once healed.
type partitionToxic struct{}

func (partitionToxic) Pipe(stub *toxics.ToxicStub) { <-stub.Interrupt }

// lossToxic delays a fraction Rate of the chunks by lossRTO, holding the
// ones behind them, as a lost TCP segment holds the stream until resent.
type lossToxic struct {
	Rate float64 `json:"rate"`
}

func (t *lossToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if rand.Float64() < t.Rate {
				select {
				case <-time.After(lossRTO):
				case <-stub.Interrupt:
					stub.Output <- c
					return
				}
			}
			stub.Output <- c
		}
	}
}

func init() {
	toxics.Register("partition", new(partitionToxic))
	toxics.Register("loss", new(lossToxic))
}
