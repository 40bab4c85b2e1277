package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// Every flag falls back to its environment variable, a flag on the command
// line wins, and a malformed value names the variable. Each case is refused
// before anything is sent.
func TestFlagsFallBackToEnvironment(t *testing.T) {
	run := func(args ...string) error {
		cmd := rootCmd()
		cmd.SetArgs(args)
		return cmd.Execute()
	}
	t.Setenv("LOADGEN_RATE", "fast")
	if err := run("--burst", "10"); err == nil || !strings.Contains(err.Error(), `LOADGEN_RATE="fast"`) {
		t.Errorf("LOADGEN_RATE=fast: %v, want the variable named", err)
	}
	// The flag wins: with --rate given, the malformed variable is not read
	// (and --burst 0 --rate 0 is refused before anything is sent).
	if err := run("--rate", "0"); err == nil || strings.Contains(err.Error(), "LOADGEN_RATE") {
		t.Errorf("--rate 0 with LOADGEN_RATE=fast: %v, want the flag to win", err)
	}
	t.Setenv("LOADGEN_RATE", "2")
	t.Setenv("LOADGEN_BURST", "3")
	if err := run(); err == nil || !strings.Contains(err.Error(), "exactly one of --burst N or --rate R") {
		t.Errorf("LOADGEN_RATE=2 LOADGEN_BURST=3: %v, want both seen and refused", err)
	}
	t.Setenv("LOADGEN_RATE", "0")
	t.Setenv("LOADGEN_KEYS", "0xnothex")
	if err := run(); err == nil || !strings.Contains(err.Error(), "key 0") {
		t.Errorf("LOADGEN_KEYS=0xnothex: %v, want the key refused", err)
	}
}

// --version names the build, as every binary of the tutorial does.
func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, cmd.Name()+" version ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("--version printed %q", s)
	}
}
