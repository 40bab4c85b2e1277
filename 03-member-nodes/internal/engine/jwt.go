package engine

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/rpc"
	"github.com/golang-jwt/jwt/v5"
)

// LoadJWTSecret accepts either the secret itself (64 hex characters, with or
// without 0x, surrounding whitespace ignored) or the path of a file holding
// it, as geth's --authrpc.jwtsecret file is written.
func LoadJWTSecret(value string) ([32]byte, error) {
	var secret [32]byte
	text, source := strings.TrimSpace(value), "--jwt-secret"
	if !looksLikeHexSecret(text) {
		b, err := os.ReadFile(value)
		if err != nil {
			return secret, fmt.Errorf("jwt secret: %s", notASecretFile(value, err))
		}
		text, source = strings.TrimSpace(string(b)), "file "+value
	}
	text = strings.TrimPrefix(strings.TrimPrefix(text, "0x"), "0X")
	b, err := hex.DecodeString(text)
	switch {
	case err != nil:
		return secret, fmt.Errorf("jwt secret in %s: not hex: %w", source, err)
	case len(b) != 32:
		return secret, fmt.Errorf("jwt secret in %s: %d bytes, the Engine API needs exactly 32 (64 hex characters; make one with `openssl rand -hex 32`)", source, len(b))
	}
	copy(secret[:], b)
	return secret, nil
}

// notASecretFile describes a --jwt-secret value that is neither a secret
// nor a readable file, without printing it unless it names a file: a
// malformed secret (63 hex digits, quotes) is still nearly the secret.
func notASecretFile(value string, err error) string {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err // the path is the value, shown or not below
	}
	if strings.ContainsAny(value, `/\.`) {
		return fmt.Sprintf("%q is neither 64 hex characters nor a readable file: %v", value, err)
	}
	return fmt.Sprintf("the value (%d characters, not shown: it may be the secret) is neither 64 hex characters nor a readable file: %v", len(value), err)
}

func looksLikeHexSecret(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	_, err := hex.DecodeString(s)
	return len(s) == 64 && err == nil
}

// jwtAuth signs a fresh HS256 token for every request (and every WebSocket
// handshake): geth rejects an iat more than 60 s from its own clock
// (execution-apis, src/engine/authentication.md).
func jwtAuth(secret [32]byte, now func() time.Time) rpc.HTTPAuth {
	return func(h http.Header) error {
		token := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iat": now().Unix()})
		signed, err := token.SignedString(secret[:])
		if err != nil {
			return fmt.Errorf("sign jwt: %w", err)
		}
		h.Set("Authorization", "Bearer "+signed)
		return nil
	}
}
