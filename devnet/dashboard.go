package devnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DatasourceUID is the uid of the Prometheus datasource that docker
// compose provisions in Grafana (docker/grafana/datasources.yml); every
// panel of the stages' dashboards names it.
const DatasourceUID = "prometheus"

// Dashboard is the part of a Grafana dashboard (each stage's
// monitoring/dashboard.json) that LoadDashboard checks.
type Dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []Panel `json:"panels"`
}

// Panel is one panel: a row header, or a graph with its queries.
type Panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *Datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *Datasource `json:"datasource"`
	} `json:"targets"`
	Panels []Panel `json:"panels"` // a collapsed row's
}

// all lists every panel, those inside collapsed rows included.
func (d *Dashboard) all() []Panel {
	var ps []Panel
	for _, p := range d.Panels {
		ps = append(ps, p)
		ps = append(ps, p.Panels...)
	}
	return ps
}

// Datasource names a Grafana datasource.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// LoadDashboard reads a dashboard and checks what Grafana would otherwise
// show as a broken or empty panel: a uid and a title, unique panel ids,
// panels inside the 24-column grid, and every panel querying the provisioned
// Prometheus datasource with at least one expression.
func LoadDashboard(path string) (*Dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	if d.UID == "" || d.Title == "" {
		bad("no uid or no title")
	}
	if len(d.Panels) == 0 {
		bad("no panels")
	}
	seen := map[int]bool{}
	for _, p := range d.all() {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if seen[p.ID] {
			bad("%s: id used twice", name)
		}
		seen[p.ID] = true
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			bad("%s: gridPos %+v outside the 24-column grid", name, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			bad("panel %d: no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != DatasourceUID {
			bad("%s: datasource is not uid %q", name, DatasourceUID)
		}
		if len(p.Targets) == 0 {
			bad("%s: no query", name)
		}
		for _, t := range p.Targets {
			if strings.TrimSpace(t.Expr) == "" {
				bad("%s: query %s has no expression", name, t.RefID)
			}
			if t.Datasource != nil && t.Datasource.UID != DatasourceUID {
				bad("%s: query %s: datasource is not uid %q", name, t.RefID, DatasourceUID)
			}
		}
	}
	return &d, errors.Join(errs...)
}

// PanelQuery is one expression of one panel.
type PanelQuery struct {
	Panel string // its title
	Expr  string
}

// Queries lists every panel's expressions.
func (d *Dashboard) Queries() []PanelQuery {
	var qs []PanelQuery
	for _, p := range d.all() {
		for _, t := range p.Targets {
			qs = append(qs, PanelQuery{p.Title, t.Expr})
		}
	}
	return qs
}

// CheckQueries evaluates each query now and fails for any that returns no
// series or none with a number (a quantile of an empty histogram is NaN):
// a panel Grafana would draw empty. An expression Prometheus cannot parse
// fails too.
func (p *Prometheus) CheckQueries(ctx context.Context, qs []PanelQuery) error {
	var errs []error
	for _, q := range qs {
		samples, err := p.Query(ctx, q.Expr)
		if err != nil {
			errs = append(errs, fmt.Errorf("panel %q: %w", q.Panel, err))
			continue
		}
		if !slices.ContainsFunc(samples, func(s Sample) bool { return s.finite() }) {
			errs = append(errs, fmt.Errorf("panel %q: %s: no data (%d series, none with a number)", q.Panel, q.Expr, len(samples)))
		}
	}
	return errors.Join(errs...)
}

func (s Sample) finite() bool {
	v, ok := s.Value[1].(string)
	if !ok {
		return false
	}
	f, err := strconv.ParseFloat(v, 64)
	return err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
}

// CheckRulesLoaded checks that every rule of the named groups was loaded
// and evaluated without error, and that every metric each one reads exists:
// an alert on a misspelt metric parses, evaluates and never fires.
func (p *Prometheus) CheckRulesLoaded(ctx context.Context, groups ...string) error {
	rules, err := p.Rules(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range groups {
		if !slices.ContainsFunc(rules, func(r Rule) bool { return r.Group == g }) {
			errs = append(errs, fmt.Errorf("rule group %q: not loaded", g))
		}
	}
	for _, r := range rules {
		if !slices.Contains(groups, r.Group) {
			continue
		}
		if r.Health != "ok" {
			errs = append(errs, fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError))
		}
		for _, m := range MetricNames(r.Query) {
			samples, err := p.Query(ctx, fmt.Sprintf("count({__name__=%q})", m))
			if err != nil {
				errs = append(errs, err)
			} else if len(samples) == 0 {
				errs = append(errs, fmt.Errorf("rule %s: no series named %s", r.Name, m))
			}
		}
	}
	return errors.Join(errs...)
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promBraces    = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promLabelList = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent     = regexp.MustCompile(`[0-9.]*[a-zA-Z_:][a-zA-Z0-9_:]*`) // with a number's digits: 1e3 is no name
	promKeywords  = []string{"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "Inf", "NaN"}
)

// MetricNames lists the metric names a PromQL expression reads: its
// identifiers that are not functions, keywords, label lists, matchers or
// durations.
func MetricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promBraces.ReplaceAllString(e, " ")
	e = promLabelList.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		call := strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " \t\n"), "(") // a function or an aggregation
		if !call && !strings.ContainsAny(name[:1], "0123456789.") && !slices.Contains(promKeywords, name) && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// Poll runs check every second until it succeeds or timeout passes, and
// returns its last error. Checks against Prometheus wait for scrapes (5 s
// apart) and rule evaluations: polling faster only loads the machine.
func (p *Prometheus) Poll(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// AlertState is the state of the alerting rule named name: "inactive",
// "pending" or "firing".
func (p *Prometheus) AlertState(ctx context.Context, name string) (string, error) {
	rules, err := p.Rules(ctx)
	if err != nil {
		return "", err
	}
	for _, r := range rules {
		if r.Name == name && r.Type == "alerting" {
			return r.State, nil
		}
	}
	return "", fmt.Errorf("no alerting rule %s loaded", name)
}
