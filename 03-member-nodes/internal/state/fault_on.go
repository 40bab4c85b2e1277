//go:build faults

package state

import (
	"os"
	"runtime"
	"slices"
	"syscall"
)

// Trigger files: the next time this process reaches the fault point and
// finds the file named by the variable, it removes it and freezes
// (SIGSTOP). Only one process can remove a file, so one trigger freezes
// one process, once. Only a leader's own work counts: members storing
// others' blocks (their leader id is not this process's --instance-id)
// never freeze.
const (
	// FaultEnv freezes a leader in its commit, holding the fencing row's lock.
	FaultEnv = "STAGE3_FAULT_STOP_IN_COMMIT"
	// FenceFaultEnv freezes a new leader between its lease and its fence.
	FenceFaultEnv = "STAGE3_FAULT_STOP_IN_FENCE"
)

func init() {
	self := ""
	if i := slices.Index(os.Args, "--instance-id"); i >= 0 && i+1 < len(os.Args) {
		self = os.Args[i+1]
	}
	if self == "" {
		return
	}
	if trigger := os.Getenv(FaultEnv); trigger != "" {
		inCommit = func(b Block) { freezeOn(trigger, b.LeaderID == self) }
	}
	if trigger := os.Getenv(FenceFaultEnv); trigger != "" {
		inFence = func(c Claim) { freezeOn(trigger, c.Leader == self) }
	}
}

// freezeOn stops the process when own and this process removed trigger.
// The SIGSTOP is sent to the calling thread: sent to the process, the
// kernel may wake another thread to start the stop, and this one would go
// on for a moment, past the fault point it is meant to freeze at.
func freezeOn(trigger string, own bool) {
	if own && os.Remove(trigger) == nil {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		_ = syscall.Tgkill(os.Getpid(), syscall.Gettid(), syscall.SIGSTOP)
	}
}
