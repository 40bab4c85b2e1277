//go:build !linux

package devnet

import "syscall"

// dieWithParent does nothing outside Linux, which alone has a parent-death
// signal: a test killed before its cleanup leaves its processes running
// (`devnet down`, or pkill geth redis-server postgres).
func dieWithParent(*syscall.SysProcAttr) {}
