package state

// Fault points, nil in the binary users build. A binary built with -tags
// faults sets them (fault_on.go), for the e2e tests of a leader frozen
// there.
var (
	// inCommit runs inside Commit while the transaction holds the fencing
	// row's lock.
	inCommit func(b Block)
	// inFence runs as Fence begins: after the leader's lease was granted,
	// before its epoch is claimed.
	inFence func(c Claim)
)
