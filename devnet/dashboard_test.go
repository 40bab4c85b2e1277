package devnet

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`up{job="a"} == 0 and max_over_time(up{job="a"}[1d]) == 1`:                                                     {"up"},
		`histogram_quantile(0.9, sum by (le, method) (rate(gethcl_engine_call_duration_seconds_bucket{job="x"}[1m])))`: {"gethcl_engine_call_duration_seconds_bucket"},
		`max(a_b{j="x"}) - on() group_right() c_d > 1e3`:                                                               {"a_b", "c_d"},
		`time() - gethcl_height_decided_timestamp_seconds offset 5m`:                                                   {"gethcl_height_decided_timestamp_seconds"},
		`count by (version, commit) (gethcl_build_info{job="member-nodes", x=~"a|b"})`:                                 {"gethcl_build_info"},
		`sum without (instance) (rate(x_total[5m])) or vector(0)`:                                                      {"x_total"},
	} {
		if got := MetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("MetricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

func TestLoadDashboardNamesEachProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.json")
	bad := `{"uid": "u", "title": "t", "panels": [
	  {"id": 1, "type": "timeseries", "title": "a", "gridPos": {"h": 8, "w": 12, "x": 16, "y": 0},
	   "datasource": {"type": "prometheus", "uid": "prometheus"}, "targets": [{"refId": "A", "expr": "up"}]},
	  {"id": 1, "type": "timeseries", "title": "b", "gridPos": {"h": 8, "w": 8, "x": 0, "y": 8},
	   "datasource": {"type": "prometheus", "uid": "other"}, "targets": [{"refId": "A", "expr": " "}]},
	  {"id": 3, "type": "stat", "title": "c", "gridPos": {"h": 8, "w": 8, "x": 0, "y": 16},
	   "datasource": {"type": "prometheus", "uid": "prometheus"}, "targets": []},
	  {"id": 4, "type": "row", "title": "collapsed", "collapsed": true, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 24}, "panels": [
	    {"id": 5, "type": "timeseries", "title": "nested", "gridPos": {"h": 8, "w": 8, "x": 0, "y": 25},
	     "datasource": {"type": "prometheus", "uid": "prometheus"}, "targets": []}]}]}`
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadDashboard(path)
	if err == nil {
		t.Fatal("a broken dashboard loaded")
	}
	for _, want := range []string{`panel 1 "a": gridPos`, `panel 1 "b": id used twice`, `panel 1 "b": datasource is not uid "prometheus"`,
		`panel 1 "b": query A has no expression`, `panel 3 "c": no query`, `panel 5 "nested": no query`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}
	if err := os.WriteFile(path, []byte(`{"uid": "u", "title": "t", "panels": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDashboard(path); err == nil || !strings.Contains(err.Error(), "unexpected end of JSON") {
		t.Errorf("truncated JSON: %v", err)
	}
}
