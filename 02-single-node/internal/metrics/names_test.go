package metrics

import (
	"runtime"
	"strings"
	"testing"
)

// Every metric of the stage's own carries the project prefix, and
// gethcl_build_info names the build.
func TestNamesAndBuildInfo(t *testing.T) {
	families, err := New().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	built := false
	for _, f := range families {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue // the Go runtime's and the process's, under their usual names
		}
		if !strings.HasPrefix(name, namespace+"_") {
			t.Errorf("metric %s lacks the %s_ prefix", name, namespace)
		}
		if name != namespace+"_build_info" {
			continue
		}
		m := f.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if m.GetGauge().GetValue() != 1 || labels["goversion"] != runtime.Version() || labels["version"] == "" {
			t.Errorf("build_info %v = %v", labels, m.GetGauge().GetValue())
		}
		built = true
	}
	if !built {
		t.Error("no gethcl_build_info")
	}
}
