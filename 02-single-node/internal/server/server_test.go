package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// node is a Node whose readiness the test sets.
type node struct {
	ready  bool
	reason string
}

func (n *node) Ready() (bool, string) { return n.ready, n.reason }
func (n *node) Status() any           { return map[string]any{"head": 7} }

func TestEndpoints(t *testing.T) {
	n := &node{ready: true}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("up 1\n")) })
	srv := New("127.0.0.1:0", n, metrics, slog.New(slog.DiscardHandler))
	get := func(path string) (int, map[string]any) {
		t.Helper()
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]any
		if w.Header().Get("Content-Type") == "application/json" {
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("GET %s: %v in %q", path, err, w.Body)
			}
		}
		return w.Code, body
	}
	for _, c := range []struct {
		path   string
		ready  bool
		reason string
		code   int
		want   map[string]any
	}{
		{"/healthz", false, "geth down", http.StatusOK, map[string]any{"alive": true}},
		{"/readyz", true, "", http.StatusOK, map[string]any{"ready": true, "reason": ""}},
		{"/readyz", false, "geth down", http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "geth down"}},
		{"/status", false, "geth down", http.StatusOK, map[string]any{"head": 7.0}},
		{"/nothing", true, "", http.StatusNotFound, nil},
	} {
		n.ready, n.reason = c.ready, c.reason
		code, body := get(c.path)
		if code != c.code {
			t.Errorf("GET %s (ready %v): status %d, want %d", c.path, c.ready, code, c.code)
		}
		for k, v := range c.want {
			if body[k] != v {
				t.Errorf("GET %s (ready %v): %s = %v, want %v", c.path, c.ready, k, body[k], v)
			}
		}
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Body.String() != "up 1\n" {
		t.Errorf("GET /metrics = %q, want the metrics handler's answer", w.Body)
	}
}

// Serve answers on the listener and returns once its context ends.
func TestServeStopsWithContext(t *testing.T) {
	srv := New("127.0.0.1:0", &node{ready: true}, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	l, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	resp, err := http.Get("http://" + l.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
}
