//go:build faults

package state

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// FaultEnv names the blocks in whose commit a leader freezes itself
// (SIGSTOP) while it holds the fencing row's lock: a comma-separated list
// of block numbers. A block counts only for the leader that made it (its
// --instance-id is the block's leader id: members storing it do not
// freeze), and only once that leader has committed half as many blocks
// before it, so that the leader taking over the frozen one's height does
// not freeze too.
const FaultEnv = "STAGE3_FAULT_STOP_IN_COMMIT"

func init() {
	stopAt := map[uint64]bool{}
	for _, f := range strings.Split(os.Getenv(FaultEnv), ",") {
		if n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64); err == nil && n > 0 {
			stopAt[n] = true
		}
	}
	self := ""
	if i := slices.Index(os.Args, "--instance-id"); i >= 0 && i+1 < len(os.Args) {
		self = os.Args[i+1]
	}
	if len(stopAt) == 0 || self == "" {
		return
	}
	var made uint64
	inCommit = func(b Block) {
		if b.LeaderID != self {
			return
		}
		if stopAt[b.Number] && made >= b.Number/2 {
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		}
		made++
	}
}
