package engine

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/rpc"
)

// Sentinel errors. Permanent: ErrInvalid, ErrInvalidParams, ErrJWTRejected,
// ErrUnsupportedFork.
// Transient (retry, reconcile): ErrUnreachable, ErrSyncing, ErrAccepted,
// ErrUnknownPayload, ErrJWTClockSkew.
var (
	ErrInvalid         = errors.New("geth says INVALID")
	ErrInvalidParams   = errors.New("geth refuses the parameters")
	ErrSyncing         = errors.New("geth says SYNCING")
	ErrAccepted        = errors.New("geth says ACCEPTED")
	ErrUnknownPayload  = errors.New("geth does not know the payload id")
	ErrJWTClockSkew    = errors.New("JWT rejected: clock skew")
	ErrJWTRejected     = errors.New("JWT rejected: wrong secret")
	ErrUnsupportedFork = errors.New("unsupported fork")
	ErrUnreachable     = errors.New("geth unreachable")
)

// Retryable reports whether err may go away by itself (geth restarting,
// syncing, a lost payload), as opposed to a verdict or a configuration error.
func Retryable(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrSyncing) || errors.Is(err, ErrAccepted) ||
		errors.Is(err, ErrUnknownPayload) || errors.Is(err, ErrJWTClockSkew)
}

// checkStatus turns a payload status into an error unless it is VALID.
func checkStatus(method string, s engine.PayloadStatusV1) error {
	switch s.Status {
	case engine.VALID:
		return nil
	case engine.INVALID:
		reason := "no reason given"
		if s.ValidationError != nil {
			reason = *s.ValidationError
		}
		// INVALID is final: the same payload gets the same answer.
		return fmt.Errorf("%s: %w: %s (latest valid ancestor %v)", method, ErrInvalid, reason, s.LatestValidHash)
	case engine.SYNCING:
		return fmt.Errorf("%s: %w: geth lacks the parent or the head and is fetching it; nothing was validated", method, ErrSyncing)
	case engine.ACCEPTED:
		return fmt.Errorf("%s: %w: the block extends a side chain geth has not validated", method, ErrAccepted)
	}
	return fmt.Errorf("%s: unknown status %q", method, s.Status)
}

// explain names the cause of a failed call.
func explain(method, url string, err error) error {
	var httpErr rpc.HTTPError
	if errors.As(err, &httpErr) && httpErr.StatusCode == http.StatusUnauthorized {
		body := strings.TrimSpace(string(httpErr.Body))
		// geth's node/jwt_handler.go: "stale token"/"future token" mean the
		// iat claim is more than 60 s away from geth's clock.
		if strings.Contains(body, "stale token") || strings.Contains(body, "future token") {
			return fmt.Errorf("%s: %w: geth says %q; this machine's clock and geth's differ by more than 60 s (check NTP)", method, ErrJWTClockSkew, body)
		}
		return fmt.Errorf("%s: %w: geth says %q; the secret is not the one geth was started with (--authrpc.jwtsecret)", method, ErrJWTRejected, body)
	}
	var rpcErr rpc.Error
	if errors.As(err, &rpcErr) {
		switch rpcErr.ErrorCode() {
		case engine.UnsupportedFork.ErrorCode():
			return fmt.Errorf("%s: %w (-38005): the method version does not match the fork geth has active at the payload's timestamp; is --genesis the file geth was initialised with?", method, ErrUnsupportedFork)
		case engine.UnknownPayload.ErrorCode():
			return fmt.Errorf("%s: %w (-38001)", method, ErrUnknownPayload)
		case engine.InvalidParams.ErrorCode():
			// The call's arguments, the same for any geth: for newPayload,
			// a payload that breaks the Engine API's rules (a missing
			// field, execution requests out of order).
			return fmt.Errorf("%s: %w (-32602): %v%s", method, ErrInvalidParams, err, errorData(err))
		}
		return fmt.Errorf("%s: %w%s", method, err, errorData(err))
	}
	if errors.As(err, &httpErr) {
		return fmt.Errorf("%s: %w", method, err)
	}
	// Over ws:// the token is checked once, in the handshake, and geth's
	// client reports only the status of a refused one (rpc/websocket.go,
	// wsHandshakeError), not geth's reason.
	if strings.Contains(err.Error(), "(HTTP status 401") {
		return fmt.Errorf("%s: %w: geth refused the websocket handshake (401): the secret is not the one geth was started with (--authrpc.jwtsecret), or this machine's clock and geth's differ by more than 60 s", method, ErrJWTRejected)
	}
	return fmt.Errorf("%s: %w at %s: %v", method, ErrUnreachable, url, err)
}

// errorData returns geth's underlying reason, which it puts in the JSON-RPC
// error's data field (e.g. "empty system contract: no code at 0x…7002").
func errorData(err error) string {
	var dataErr rpc.DataError
	if !errors.As(err, &dataErr) || dataErr.ErrorData() == nil {
		return ""
	}
	if m, ok := dataErr.ErrorData().(map[string]any); ok && m["err"] != nil {
		return fmt.Sprint(": ", m["err"])
	}
	return fmt.Sprint(": ", dataErr.ErrorData())
}
