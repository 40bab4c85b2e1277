package devnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Redis is a throwaway redis-server without persistence: a restart starts
// empty, which is what a crashed lease store looks like to stage 3.
type Redis struct {
	*Process
	Port     int
	Password string // requirepass; "" for none
}

// Addr is host:port, the form REDIS_ADDR takes.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// URL is the form REDIS_URL takes: redis://[:password@]host:port/0.
func (r *Redis) URL() string {
	u := url.URL{Scheme: "redis", Host: r.Addr(), Path: "/0"}
	if r.Password != "" {
		u.User = url.UserPassword("", r.Password)
	}
	return u.String()
}

func newRedis(dir string, port int, password string, detach bool) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found in PATH: install it (Debian: apt-get install -y redis-server)")
	}
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	var args []string
	if password != "" {
		// In a config file, not on the command line, which every user of
		// the machine sees (and the process log records).
		conf := filepath.Join(data, "auth.conf")
		if err := os.WriteFile(conf, []byte("requirepass "+strconv.Quote(password)+"\n"), 0o600); err != nil {
			return nil, err
		}
		args = append(args, conf)
	}
	args = append(args, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", data,
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no")
	return &Redis{Port: port, Password: password, Process: &Process{
		Name: "redis", Path: bin, Detach: detach, Args: args,
		LogPath: filepath.Join(dir, "redis.log"),
		PIDPath: filepath.Join(dir, "redis.pid"),
	}}, nil
}

// WaitReady polls until redis answers PING (after AUTH, with a password).
func (r *Redis) WaitReady(ctx context.Context) error {
	return waitFor(ctx, r.Process, func() error {
		conn, err := net.DialTimeout("tcp", r.Addr(), time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(time.Second))
		rd := bufio.NewReader(conn)
		if r.Password != "" {
			auth := fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(r.Password), r.Password)
			if _, err := conn.Write([]byte(auth)); err != nil {
				return err
			}
			if line, err := rd.ReadString('\n'); err != nil || line != "+OK\r\n" {
				return fmt.Errorf("redis AUTH: %q %v", line, err)
			}
		}
		if _, err := conn.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		line, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		if line != "+PONG\r\n" {
			return fmt.Errorf("redis answered %q", line)
		}
		return r.checkOurs(conn, rd)
	})
}

// checkOurs checks that the Redis answering is the one the devnet started:
// INFO's process_id is its pid.
func (r *Redis) checkOurs(conn net.Conn, rd *bufio.Reader) error {
	if _, err := conn.Write([]byte("INFO server\r\n")); err != nil {
		return err
	}
	head, err := rd.ReadString('\n') // $<length>
	if err != nil || !strings.HasPrefix(head, "$") {
		return fmt.Errorf("redis INFO: %q %v", head, err)
	}
	size, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		return fmt.Errorf("redis INFO: %q", head)
	}
	body := make([]byte, size+2)
	if _, err := io.ReadFull(rd, body); err != nil {
		return err
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if pid, ok := strings.CutPrefix(line, "process_id:"); ok {
			if want := strconv.Itoa(r.Pid()); pid != want {
				return fmt.Errorf("%w: the Redis on %d is process %s, the devnet started %s", errNotOurs, r.Port, pid, want)
			}
			return nil
		}
	}
	return fmt.Errorf("redis INFO has no process_id")
}

// Postgres is a throwaway PostgreSQL server with a `consensus` database. It
// trusts every loopback connection, so the compose credentials
// (postgres/postgres) work unchanged.
type Postgres struct {
	*Process
	Port    int
	DataDir string
	binDir  string
	cred    *syscall.Credential
}

// URL is the connection string, the form POSTGRES_URL takes.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%d/consensus?sslmode=disable", p.Port)
}

func newPostgres(dir, name string, port int, detach bool) (*Postgres, error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, name)
	return &Postgres{Port: port, DataDir: data, binDir: binDir, cred: cred, Process: &Process{
		Name: name, Path: filepath.Join(binDir, "postgres"), Detach: detach, Credential: cred,
		StopSignal: syscall.SIGINT, // fast shutdown: SIGTERM would wait for clients
		Args: []string{"-D", data, "-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
			"-c", "max_connections=200"},
		LogPath: filepath.Join(dir, name+".log"),
		PIDPath: filepath.Join(dir, name+".pid"),
	}}, nil
}

// postgresBinDir finds the server binaries: $PG_BIN, else the newest
// /usr/lib/postgresql/*/bin (Debian's layout), else postgres in PATH.
func postgresBinDir() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries not found: install them (Debian: apt-get install -y postgresql) or set PG_BIN")
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// postgresCredential returns the `postgres` user when running as root:
// initdb and postgres refuse to run as root.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root, and PostgreSQL refuses root: a `postgres` user is needed (the Debian postgresql package creates it)")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// initialize runs initdb on an empty data directory.
func (p *Postgres) initialize(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(p.DataDir, "PG_VERSION")); err == nil {
		return nil
	}
	if err := os.MkdirAll(p.DataDir, 0o700); err != nil {
		return err
	}
	if p.cred != nil {
		if err := os.Chown(p.DataDir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return err
		}
		if err := makeTraversable(filepath.Dir(p.DataDir)); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, "initdb"),
		"-D", p.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: initdb: %w\n%s", p.Name, err, lastLines(string(out), 15))
	}
	return nil
}

// makeTraversable gives "others" search permission on dir and its ancestors
// where it is missing, so the postgres user can reach a data directory below
// a 0700 temporary directory created by root.
func makeTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("make %s reachable for the postgres user: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// WaitReady polls until the server accepts connections, then creates the
// `consensus` database if it does not exist yet.
func (p *Postgres) WaitReady(ctx context.Context) error {
	host, port := "127.0.0.1", strconv.Itoa(p.Port)
	if err := waitFor(ctx, p.Process, func() error {
		out, err := exec.CommandContext(ctx, filepath.Join(p.binDir, "pg_isready"), "-h", host, "-p", port, "-U", "postgres").CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_isready: %s", out)
		}
		return nil
	}); err != nil {
		return err
	}
	psql := func(sql string) ([]byte, error) {
		return exec.CommandContext(ctx, filepath.Join(p.binDir, "psql"), "-h", host, "-p", port, "-U", "postgres",
			"-d", "postgres", "-tAc", sql).CombinedOutput()
	}
	// The server answering must run on this data directory.
	dir, err := psql("SHOW data_directory")
	if err != nil {
		return fmt.Errorf("%s: %w: %s", p.Name, err, dir)
	}
	if got, want := strings.TrimSpace(string(dir)), p.DataDir; !samePath(got, want) {
		return fmt.Errorf("%s: %w: the PostgreSQL on %d runs on %s, the devnet started one on %s", p.Name, errNotOurs, p.Port, got, want)
	}
	out, err := psql("SELECT 1 FROM pg_database WHERE datname = 'consensus'")
	if err != nil {
		return fmt.Errorf("%s: %w: %s", p.Name, err, out)
	}
	if len(out) == 0 {
		if out, err := psql("CREATE DATABASE consensus"); err != nil {
			return fmt.Errorf("%s: create database: %w: %s", p.Name, err, out)
		}
	}
	return nil
}

// samePath reports whether two paths name one directory.
func samePath(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}
