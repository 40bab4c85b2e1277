package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		info Info
		want string
	}{
		{Info{Version: "v1.2.3", Commit: "0123456789abcdef0123", Go: "go1.26.8"}, "v1.2.3 (commit 0123456789ab), go1.26.8"},
		{Info{Version: "(devel)", Commit: "abc", Modified: true, Go: "go1.26.8"}, "(devel) (commit abc, modified), go1.26.8"},
		{Info{Version: "(devel)", Go: "go1.26.8"}, "(devel) (commit unknown), go1.26.8"},
	} {
		if got := tc.info.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.info, got, tc.want)
		}
	}
	if got := Get(); got.Go != runtime.Version() || got.Version == "" || !strings.Contains(got.String(), runtime.Version()) {
		t.Fatalf("Get() = %+v", got)
	}
}
