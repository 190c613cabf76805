// Package pgtest gives tests a PostgreSQL server: the one named by
// INFERGATE_TEST_POSTGRES_URL, or else a throwaway cluster it creates
// with the installed server binaries (initdb into a temporary folder,
// fsync off, a Unix socket only), run as the postgres user when the test
// runs as root. Each test gets its own schema (see Server.URL).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable that points the tests at an
// existing server instead (a URL whose user may create schemas).
const EnvURL = "INFERGATE_TEST_POSTGRES_URL"

// ErrUnavailable is returned by Launch when there is neither EnvURL nor
// the PostgreSQL server binaries.
var ErrUnavailable = errors.New("pgtest: no PostgreSQL: set " + EnvURL +
	" or install the server (initdb and postgres in PATH or /usr/lib/postgresql/*/bin; Debian: apt-get install postgresql)")

// Server is a PostgreSQL server for tests.
type Server struct {
	admin  string // URL of a database the tests make schemas in
	dir    string // the throwaway cluster's folder; "" for EnvURL
	cmd    *exec.Cmd
	exited chan struct{}
	n      atomic.Int64
}

// Start is Launch for one test: it skips the test when no PostgreSQL is
// available and closes the server when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := Launch()
	if errors.Is(err, ErrUnavailable) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// Launch connects to EnvURL's server, or starts a throwaway cluster.
// Close stops and removes the cluster.
func Launch() (*Server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		s := &Server{admin: u}
		return s, s.ping(10 * time.Second)
	}
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, exited: make(chan struct{})}
	if err := s.start(bin); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// findBin returns the folder of initdb and postgres.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin") // Debian, Ubuntu
	more, _ := filepath.Glob("/usr/pgsql-*/bin")          // RHEL
	dirs = append(dirs, more...)
	// The newest version first (by number: "9.6" < "15").
	version := func(d string) int {
		v := strings.TrimPrefix(filepath.Base(filepath.Dir(d)), "pgsql-")
		n, _ := strconv.Atoi(strings.Split(v, ".")[0])
		return n
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if fileExists(filepath.Join(d, "initdb")) && fileExists(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", ErrUnavailable
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// start runs initdb and the server in s.dir, as the postgres user when
// this process is root (initdb and postgres refuse to run as root).
func (s *Server) start(bin string) error {
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("pgtest: running as root, and %w: the server must run as another user", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		if err := os.Chown(s.dir, uid, gid); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	data := filepath.Join(s.dir, "data")
	logPath := filepath.Join(s.dir, "server.log")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	asUser(initdb, uid, gid)
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", s.dir,
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	asUser(s.cmd, uid, gid)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: postgres: %w", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	s.admin = (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres",
		RawQuery: url.Values{"host": {s.dir}, "sslmode": {"disable"}}.Encode()}).String()
	if err := s.ping(30 * time.Second); err != nil {
		log, _ := os.ReadFile(logPath)
		return fmt.Errorf("%w; server log:\n%s", err, log)
	}
	return nil
}

// ping waits until the server accepts a connection.
func (s *Server) ping(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, s.admin)
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if s.exited != nil {
			select {
			case <-s.exited:
				return fmt.Errorf("pgtest: postgres exited: %v", s.cmd.ProcessState)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: server not ready within %s: %w", limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL creates a new, empty schema and returns a connection URL whose
// search_path is that schema, so that tables made through it land there.
// The schema is dropped when the test ends (after the cleanups registered
// later, which close the test's stores).
func (s *Server) URL(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.n.Add(1))
	if err := s.exec(`CREATE SCHEMA ` + name); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	u, err := url.Parse(s.admin)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Server) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql)
	return err
}

// Close stops a throwaway cluster (an immediate shutdown: its data is
// thrown away) and removes its folder.
func (s *Server) Close() error {
	if s.dir == "" {
		return nil
	}
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(sigQuit)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
			err = errors.New("postgres did not stop within 10s of SIGQUIT; killed")
		}
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}
