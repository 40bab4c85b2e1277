package devnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// GethModule is the go-ethereum module the geth binary is built from. Its
// version is the one this module's go.mod pins (the `tool` directive).
const GethModule = "github.com/ethereum/go-ethereum"

// GethBinary returns the path of a geth binary built from the pinned
// go-ethereum module, building it on first use. $GETH_BIN overrides it.
//
// The binary is cached per version under $GETH_CACHE_DIR (default: the user
// cache dir), so the first call costs a full build (about two minutes on two
// vCPUs) and later calls cost a `go list`. A file lock lets parallel test
// binaries share one build.
func GethBinary(ctx context.Context) (string, error) {
	if p := os.Getenv("GETH_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("GETH_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	modDir, err := moduleDir()
	if err != nil {
		return "", err
	}
	version, err := goOutput(ctx, modDir, "list", "-m", "-f", "{{.Version}}", GethModule)
	if err != nil {
		return "", fmt.Errorf("resolve pinned geth version: %w", err)
	}
	cacheDir, err := binCacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cacheDir, fmt.Sprintf("geth-%s-%s-%s", version, runtime.GOOS, runtime.GOARCH))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}

	unlock, err := lockFile(filepath.Join(cacheDir, "build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil { // built by another process meanwhile
		return bin, nil
	}
	tmp := bin + ".tmp"
	if _, err := goOutput(ctx, modDir, "build", "-o", tmp, GethModule+"/cmd/geth"); err != nil {
		return "", fmt.Errorf("build geth %s: %w", version, err)
	}
	return bin, os.Rename(tmp, bin)
}

// moduleDir is the directory of this module's go.mod, whose tool directive
// pins geth. It falls back to the working directory (any module that requires
// go-ethereum with a `tool .../cmd/geth` line works too).
func moduleDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Dir(file)
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
	}
	return os.Getwd()
}

func binCacheDir() (string, error) {
	dir := os.Getenv("GETH_CACHE_DIR")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache dir for the geth binary (set GETH_CACHE_DIR): %w", err)
		}
		dir = filepath.Join(base, "geth-consensus-tutorial")
	}
	return dir, os.MkdirAll(dir, 0o755)
}

func goOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
