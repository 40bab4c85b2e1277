package state

// inCommit, nil in the binary users build, runs inside Commit while the
// transaction holds the fencing row's lock. A binary built with -tags
// faults sets it (fault_on.go), for the e2e test of a leader frozen there.
var inCommit func(b Block)
