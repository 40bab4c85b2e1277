package devnet

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one external program of the network (a geth, a Redis, a
// PostgreSQL). It runs in its own process group, so signals reach its children
// too (PostgreSQL forks a backend per connection), and its output is appended
// to LogPath.
//
// A Process started by a test dies with the test binary (PR_SET_PDEATHSIG);
// one started with Detach outlives the devnet CLI that started it and is
// found again through its pid file.
type Process struct {
	Name    string
	Path    string
	Args    []string
	Env     []string // appended to os.Environ()
	LogPath string
	PIDPath string // written on start, removed on stop; optional
	Detach  bool
	// Credential, when set, runs the process as another user (PostgreSQL
	// refuses to run as root).
	Credential *syscall.Credential
	// StopSignal asks for a graceful exit; SIGTERM when zero (PostgreSQL
	// wants SIGINT: its SIGTERM waits for every client to disconnect).
	StopSignal syscall.Signal

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	exitErr error
}

// ErrNotRunning is returned when a signal is sent to a process that is not running.
var ErrNotRunning = errors.New("process not running")

// Start launches the process. It fails if it is already running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running() {
		return fmt.Errorf("%s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open log: %w", p.Name, err)
	}
	fmt.Fprintf(logFile, "\n=== %s start %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.Name, p.Path, strings.Join(p.Args, " "))

	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.Credential}
	if !p.Detach {
		dieWithParent(cmd.SysProcAttr)
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("%s: start %s: %w", p.Name, p.Path, err)
	}
	p.cmd, p.done, p.exitErr = cmd, make(chan struct{}), nil
	if p.PIDPath != "" {
		if err := os.WriteFile(p.PIDPath, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			logFile.Close()
			return fmt.Errorf("%s: write pid file: %w", p.Name, err)
		}
	}
	done := p.done
	go func() {
		err := cmd.Wait()
		logFile.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *Process) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Running reports whether the process has been started and has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running()
}

// Pid returns the process id, or 0 when it is not running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited returns a channel closed when the process exits, and the exit error
// once it has.
func (p *Process) Exited() (<-chan struct{}, func() error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done, func() error { p.mu.Lock(); defer p.mu.Unlock(); return p.exitErr }
}

// Signal sends sig to the whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return fmt.Errorf("%s: %w", p.Name, ErrNotRunning)
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Stop asks the process to exit (SIGTERM) and SIGKILLs it if it has not
// exited within timeout. Stopping a stopped process is a no-op. A paused
// process is resumed first so that it can handle SIGTERM.
func (p *Process) Stop(timeout time.Duration) error {
	p.mu.Lock()
	if !p.running() {
		p.mu.Unlock()
		return nil
	}
	pid, done := p.cmd.Process.Pid, p.done
	p.mu.Unlock()

	tree := descendants(pid)
	sig := p.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = syscall.Kill(-pid, sig)
	_ = syscall.Kill(-pid, syscall.SIGCONT)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
	waitGone(tree, timeout)
	p.removePIDFile()
	return nil
}

// Kill SIGKILLs the process group and waits until the process is gone. It
// models a crash: nothing is flushed.
func (p *Process) Kill() error {
	p.mu.Lock()
	if !p.running() {
		p.mu.Unlock()
		return fmt.Errorf("%s: %w", p.Name, ErrNotRunning)
	}
	pid, done := p.cmd.Process.Pid, p.done
	p.mu.Unlock()
	tree := descendants(pid)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("%s: kill: %w", p.Name, err)
	}
	for _, c := range tree {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	<-done
	waitGone(tree, 10*time.Second)
	p.removePIDFile()
	return nil
}

// descendants lists the processes below pid, found through the parent links
// in /proc. A process group is not enough: PostgreSQL's backends each start
// their own session, so a signal to the postmaster's group misses them, and
// a restart while one still holds the shared memory fails.
func descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fields := statFields("/proc/" + e.Name() + "/stat")
		if len(fields) > 1 {
			if ppid, err := strconv.Atoi(fields[1]); err == nil {
				children[ppid] = append(children[ppid], child)
			}
		}
	}
	var out []int
	for queue := children[pid]; len(queue) > 0; queue = queue[1:] {
		out = append(out, queue[0])
		queue = append(queue, children[queue[0]]...)
	}
	return out
}

// statFields returns the fields of a /proc stat file after the parenthesised
// command name: state, ppid, ... It returns nil if the file cannot be read.
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// stopped reports whether every thread of pid is stopped by a signal (state T).
// A process that has exited counts as stopped: it answers nothing either.
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true
	}
	for _, t := range tasks {
		fields := statFields(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if len(fields) > 0 && fields[0] != "T" {
			return false
		}
	}
	return true
}

// waitGone polls until none of pids is alive, up to timeout.
func waitGone(pids []int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Pause freezes the process (SIGSTOP): it keeps its sockets but answers
// nothing. kill(2) only queues the signal, and a thread running on another
// CPU can still finish a request, so Pause returns once every thread of the
// process and its children is seen stopped.
func (p *Process) Pause() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	pid := p.Pid()
	deadline := time.Now().Add(5 * time.Second)
	for _, q := range append([]int{pid}, descendants(pid)...) {
		for !stopped(q) {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: pid %d not stopped 5s after SIGSTOP", p.Name, q)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// Resume continues a paused process (SIGCONT).
func (p *Process) Resume() error { return p.Signal(syscall.SIGCONT) }

// Restart stops the process gracefully and starts it again with the same arguments.
func (p *Process) Restart(timeout time.Duration) error {
	if err := p.Stop(timeout); err != nil {
		return err
	}
	return p.Start()
}

func (p *Process) removePIDFile() {
	if p.PIDPath != "" {
		_ = os.Remove(p.PIDPath)
	}
}

// TailLog returns the last n bytes of the process log, for error messages.
func (p *Process) TailLog(n int64) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// StopPIDFile stops a detached process recorded in pidPath and everything
// below it: SIGINT (a graceful stop for geth, redis-server and a fast one for
// postgres), then SIGKILL after timeout. It removes the file; a missing file
// is not an error.
func StopPIDFile(pidPath string, timeout time.Duration) error {
	pid, err := ReadPIDFile(pidPath)
	if err != nil || pid == 0 {
		return err
	}
	defer os.Remove(pidPath)
	if !Alive(pid) {
		return nil
	}
	tree := append(descendants(pid), pid)
	_ = syscall.Kill(-pid, syscall.SIGINT)
	_ = syscall.Kill(-pid, syscall.SIGCONT)
	waitGone([]int{pid}, timeout)
	if Alive(pid) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	for _, p := range tree {
		_ = syscall.Kill(p, syscall.SIGKILL) // stragglers in sessions of their own
	}
	waitGone(tree, timeout)
	return nil
}

// ReadPIDFile returns the pid stored in path, or 0 if the file does not exist.
func ReadPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pid file %s: %w", path, err)
	}
	return pid, nil
}

// Alive reports whether a process with this pid exists and is not a zombie.
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state field follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
