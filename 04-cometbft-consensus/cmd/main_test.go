package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// --version names the build: the module version, the commit when the
// build recorded it, and the Go toolchain.
func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, cmd.Name()+" version ") || !strings.Contains(s, "commit") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("--version printed %q", s)
	}
}
