package engine

import (
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"
)

func TestMethodsFollowTheForkSchedule(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	cfg := &params.ChainConfig{ChainID: big.NewInt(1), LondonBlock: big.NewInt(0),
		ShanghaiTime: u(10), CancunTime: u(20), PragueTime: u(30), OsakaTime: u(40), AmsterdamTime: u(60)}
	for _, tc := range []struct {
		time          uint64
		fcu, get, new string
	}{
		{10, "engine_forkchoiceUpdatedV2", "engine_getPayloadV2", "engine_newPayloadV2"},
		{20, "engine_forkchoiceUpdatedV3", "engine_getPayloadV3", "engine_newPayloadV3"},
		{30, "engine_forkchoiceUpdatedV3", "engine_getPayloadV4", "engine_newPayloadV4"},
		{40, "engine_forkchoiceUpdatedV3", "engine_getPayloadV5", "engine_newPayloadV4"},
	} {
		m, err := MethodsAt(cfg, tc.time)
		if err != nil || m.ForkchoiceUpdated != tc.fcu || m.GetPayload != tc.get || m.NewPayload != tc.new {
			t.Errorf("t=%d: %+v %v", tc.time, m, err)
		}
	}
	if _, err := MethodsAt(cfg, 60); !errors.Is(err, ErrUnsupportedFork) {
		t.Errorf("Amsterdam: %v", err)
	}
}

func TestLoadJWTSecret(t *testing.T) {
	const hex64 = "00dbade874fff5f8f258b4f0291dd06b00fd7ee1c11dea1c166a4b0e578c9b01"
	file := filepath.Join(t.TempDir(), "jwt.hex")
	if err := os.WriteFile(file, []byte("0x"+hex64+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{hex64, "0x" + hex64, " " + hex64 + "\n", file} {
		if s, err := LoadJWTSecret(ok); err != nil || hexutil.Encode(s[:]) != "0x"+hex64 {
			t.Errorf("%q: %x %v", ok, s, err)
		}
	}
	for _, bad := range []string{hex64[:60], hex64[:63], "0X" + hex64[:63], `"` + hex64 + `"`, "zz" + hex64[2:], filepath.Join(t.TempDir(), "missing")} {
		_, err := LoadJWTSecret(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), hex64[2:58]) {
			t.Errorf("%q: the error shows the secret: %v", bad, err)
		}
	}
}

func TestVersionedHashesAreNeverNil(t *testing.T) {
	if h, err := VersionedHashes(nil); err != nil || h == nil {
		t.Fatalf("%v %v", h, err)
	}
	h, err := VersionedHashes(&beacon.BlobsBundle{Commitments: []hexutil.Bytes{make([]byte, 48)}})
	if err != nil || len(h) != 1 || h[0][0] != 0x01 {
		t.Fatalf("%v %v", h, err)
	}
}

type codeErr struct{ code int }

func (e codeErr) Error() string  { return "rpc error" }
func (e codeErr) ErrorCode() int { return e.code }

func TestErrorsAreClassified(t *testing.T) {
	reason := "bad block"
	for _, tc := range []struct {
		err       error
		want      error
		retryable bool
	}{
		{checkStatus("m", beacon.PayloadStatusV1{Status: beacon.INVALID, ValidationError: &reason}), ErrInvalid, false},
		{checkStatus("m", beacon.PayloadStatusV1{Status: beacon.SYNCING}), ErrSyncing, true},
		{checkStatus("m", beacon.PayloadStatusV1{Status: beacon.ACCEPTED}), ErrAccepted, true},
		{explain("m", "u", codeErr{-38005}), ErrUnsupportedFork, false},
		{explain("m", "u", codeErr{-38001}), ErrUnknownPayload, true},
		{explain("m", "u", codeErr{-32602}), ErrInvalidParams, false},
		{explain("m", "u", rpc.HTTPError{StatusCode: http.StatusUnauthorized, Body: []byte("stale token")}), ErrJWTClockSkew, true},
		{explain("m", "u", rpc.HTTPError{StatusCode: http.StatusUnauthorized, Body: []byte("signature is invalid")}), ErrJWTRejected, false},
		{explain("m", "u", errors.New("connection refused")), ErrUnreachable, true},
		// geth's rpc/websocket.go wsHandshakeError, as a refused ws:// handshake reads
		{explain("m", "u", errors.New("websocket: bad handshake (HTTP status 401 Unauthorized)")), ErrJWTRejected, false},
	} {
		if !errors.Is(tc.err, tc.want) || Retryable(tc.err) != tc.retryable {
			t.Errorf("%v: want %v, retryable %v", tc.err, tc.want, tc.retryable)
		}
	}
	m, _ := MethodsAt(&params.ChainConfig{ChainID: big.NewInt(1), LondonBlock: big.NewInt(0), ShanghaiTime: new(uint64)}, 5)
	if err := withFork(explain(m.GetPayload, "u", codeErr{-38005}), m, 5); !errors.Is(err, ErrUnsupportedFork) ||
		!strings.Contains(err.Error(), "engine_getPayloadV2") || !strings.Contains(err.Error(), "fork Shanghai at timestamp 5") {
		t.Errorf("-38005 does not name the method version and the fork: %v", err)
	}
	if !strings.Contains(checkStatus("m", beacon.PayloadStatusV1{Status: beacon.INVALID, ValidationError: &reason}).Error(), reason) {
		t.Error("INVALID does not carry geth's validation error")
	}
}
