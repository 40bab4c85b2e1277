package devnet

import "syscall"

// dieWithParent has the kernel SIGKILL the process when its parent (a
// test, the devnet CLI in the foreground) dies, however it dies.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
