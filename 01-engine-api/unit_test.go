package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"
)

func TestLoadJWTSecret(t *testing.T) {
	const hex64 = "00dbade874fff5f8f258b4f0291dd06b00fd7ee1c11dea1c166a4b0e578c9b01"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, value, wantErr string
	}{
		{"hex", hex64, ""},
		{"hex with 0x", "0x" + hex64, ""},
		{"hex with spaces", "  " + hex64 + "\n", ""},
		{"file", write("ok.hex", hex64+"\n"), ""},
		{"file with 0x", write("ok0x.hex", "0x"+hex64), ""},
		{"short file", write("short.hex", hex64[:62]), "31 bytes"},
		{"not hex in file", write("bad.hex", strings.Repeat("zz", 32)), "not hex"},
		{"missing file", filepath.Join(dir, "missing.hex"), "neither 64 hex characters nor a readable file"},
		{"too long hex", hex64 + "00", "neither 64 hex characters nor a readable file"},
		{"63 hex digits", hex64[:63], "not shown"},
		{"quoted", `"` + hex64 + `"`, "not shown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret, err := loadJWTSecret(tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v; want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), hex64[2:58]) {
					t.Fatalf("the error shows the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := hexutil.Encode(secret[:]); got != "0x"+hex64 {
				t.Fatalf("secret = %s", got)
			}
		})
	}
}

func TestMethodsFollowTheForkSchedule(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	cfg := &params.ChainConfig{
		ChainID: big.NewInt(1), LondonBlock: big.NewInt(0),
		ShanghaiTime: u(10), CancunTime: u(20), PragueTime: u(30), OsakaTime: u(40), BPO1Time: u(50), AmsterdamTime: u(60),
	}
	for _, tc := range []struct {
		time          uint64
		fcu, get, new string
	}{
		{10, "engine_forkchoiceUpdatedV2", "engine_getPayloadV2", "engine_newPayloadV2"},
		{25, "engine_forkchoiceUpdatedV3", "engine_getPayloadV3", "engine_newPayloadV3"},
		{30, "engine_forkchoiceUpdatedV3", "engine_getPayloadV4", "engine_newPayloadV4"},
		{40, "engine_forkchoiceUpdatedV3", "engine_getPayloadV5", "engine_newPayloadV4"},
		{55, "engine_forkchoiceUpdatedV3", "engine_getPayloadV5", "engine_newPayloadV4"},
	} {
		m, err := methodsAt(cfg, tc.time)
		if err != nil {
			t.Fatalf("t=%d: %v", tc.time, err)
		}
		if m.forkchoiceUpdated != tc.fcu || m.getPayload != tc.get || m.newPayload != tc.new {
			t.Errorf("t=%d (%s): got %s %s %s", tc.time, m.fork, m.forkchoiceUpdated, m.getPayload, m.newPayload)
		}
	}
	for _, ts := range []uint64{5, 60} { // Paris, Amsterdam
		if _, err := methodsAt(cfg, ts); err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Errorf("t=%d: err = %v; want not supported", ts, err)
		}
	}
}

func TestVersionedHashes(t *testing.T) {
	if h, err := versionedHashes(nil); err != nil || h == nil || len(h) != 0 {
		t.Fatalf("nil bundle: %v %v; want an empty, non-nil list", h, err)
	}
	commitment := make([]byte, 48)
	h, err := versionedHashes(&engine.BlobsBundle{Commitments: []hexutil.Bytes{commitment}})
	if err != nil || len(h) != 1 || h[0][0] != 0x01 {
		t.Fatalf("got %v %v; want one hash with version byte 0x01", h, err)
	}
	if _, err := versionedHashes(&engine.BlobsBundle{Commitments: []hexutil.Bytes{commitment[:47]}}); err == nil {
		t.Fatal("a 47-byte commitment was accepted")
	}
}

func TestStatusesAreExplained(t *testing.T) {
	reason := "invalid merkle root"
	for _, tc := range []struct {
		status string
		want   error
		text   string
	}{
		{engine.INVALID, ErrInvalidPayload, reason},
		{engine.SYNCING, ErrSyncing, "nothing was validated"},
		{engine.ACCEPTED, ErrAccepted, "side chain"},
	} {
		err := checkStatus("engine_newPayloadV4", engine.PayloadStatusV1{Status: tc.status, ValidationError: &reason})
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v", tc.status, err)
		}
	}
	if err := checkStatus("m", engine.PayloadStatusV1{Status: engine.VALID}); err != nil {
		t.Errorf("VALID: %v", err)
	}
	unsupported := explainCallError("engine_getPayloadV4", "http://x", rpcError{-38005, "Unsupported fork"})
	if !errors.Is(unsupported, ErrUnsupportedFork) || !strings.Contains(unsupported.Error(), "-38005") {
		t.Errorf("-38005: %v", unsupported)
	}
	rejected := explainCallError("m", "http://x", rpc.HTTPError{StatusCode: http.StatusUnauthorized, Body: []byte("token signature is invalid")})
	if !errors.Is(rejected, ErrJWTRejected) {
		t.Errorf("401: %v", rejected)
	}
}

// A geth that answers SYNCING to forkchoiceUpdated on a block it holds
// (its head, or one it just called VALID) is stuck waiting for a snap
// sync: the error names the cause and the fix.
func TestSyncingOnAHeldBlockIsExplained(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"payloadStatus":{"status":"SYNCING"},"payloadId":null}}`, req.ID)
	}))
	defer srv.Close()
	e, err := dialEngine(context.Background(), srv.URL, [32]byte{}, time.Second, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	genesis, err := loadGenesis(mustFindUp(t, "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	b := &builder{engine: e, chain: genesis.Config, out: io.Discard}
	_, err = b.buildBlock(context.Background(), blockRef{number: 7, time: 1})
	if !errors.Is(err, ErrSyncing) || !containsAll(err.Error(), "holds block #7", "snap sync", "geth removedb", "--state.scheme hash") {
		t.Fatalf("err = %v; want SYNCING explained: snap sync, cause and fix", err)
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

type rpcError struct {
	code int
	msg  string
}

func (e rpcError) Error() string  { return e.msg }
func (e rpcError) ErrorCode() int { return e.code }

// Every wrong setting is reported at once, each naming its flag or variable.
func TestBadSettingsAreAllNamed(t *testing.T) {
	t.Setenv("BLOCKS", "many")
	t.Setenv("BUILD_WAIT", "-5ms")
	cmd := newRootCmd(new(bytes.Buffer))
	cmd.SetArgs([]string{"--eth-client-url", "localhost:8551", "--timeout", "0s", "--fee-recipient", "0x12"})
	err := cmd.Execute()
	if err == nil {
		t.Fatal("bad settings accepted")
	}
	for _, want := range []string{"BLOCKS=\"many\"", "--build-wait -5ms", "--eth-client-url \"localhost:8551\"", "--timeout 0s", "--fee-recipient \"0x12\""} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	t.Setenv("ETH_CLIENT_URL", "not a url")
	cmd := newRootCmd(new(bytes.Buffer))
	if err := cmd.ParseFlags([]string{"--eth-client-url", "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd); err != nil {
		t.Fatal(err)
	}
	if got := cmd.Flags().Lookup("eth-client-url").Value.String(); got != "http://127.0.0.1:1" {
		t.Fatalf("flag = %s; the command line must win", got)
	}
}

// --version names the build: the module version, the commit when the
// build recorded it, and the Go toolchain.
func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd(new(bytes.Buffer))
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, "engine-api version ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("--version printed %q", s)
	}
}
