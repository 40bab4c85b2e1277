// Package version names the running build: the main module's version and
// the commit it was built from, as `go build` records them in the binary
// (runtime/debug.ReadBuildInfo; no -ldflags needed). --version prints it,
// and /metrics exports it as gethcl_build_info.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info describes the running binary.
type Info struct {
	Version  string // the main module's version; "(devel)" for a build from a checkout
	Commit   string // vcs.revision; "" when the build did not record it
	Modified bool   // vcs.modified: built from a tree with uncommitted changes
	Go       string // the toolchain, e.g. go1.26.8
}

// release and revision, when set with -ldflags "-X
// <module>/internal/version.release=v1.2.3 -X ….revision=<commit>", take
// the place of what go build recorded: a Docker build context holds no
// .git (docker/*.Dockerfile pass them as build arguments).
var release, revision string

// Get reads the running binary's build information.
func Get() Info {
	i := Info{Version: "(unknown)", Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		i.Version = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if release != "" {
		i.Version = release
	}
	if revision != "" {
		i.Commit, i.Modified = revision, false
	}
	return i
}

// String is what --version prints: "(devel) (commit 1a2b3c4d5e6f,
// modified), go1.26.8".
func (i Info) String() string {
	commit := "commit unknown"
	if i.Commit != "" {
		commit = "commit " + i.Commit[:min(12, len(i.Commit))]
	}
	if i.Modified {
		commit += ", modified"
	}
	return fmt.Sprintf("%s (%s), %s", i.Version, commit, i.Go)
}
