//go:build faults

package state

import (
	"os"
	"slices"
	"syscall"
)

// FaultEnv names a trigger file: the next commit of the leader's own block
// that finds it removes it and freezes its process (SIGSTOP) while it holds
// the fencing row's lock. Only one process can remove the file, so one
// trigger freezes one leader, once. Members storing others' blocks (their
// leader id is not this process's --instance-id) never freeze.
const FaultEnv = "STAGE3_FAULT_STOP_IN_COMMIT"

func init() {
	trigger := os.Getenv(FaultEnv)
	self := ""
	if i := slices.Index(os.Args, "--instance-id"); i >= 0 && i+1 < len(os.Args) {
		self = os.Args[i+1]
	}
	if trigger == "" || self == "" {
		return
	}
	inCommit = func(b Block) {
		if b.LeaderID == self && os.Remove(trigger) == nil {
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		}
	}
}
