package servers

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// PostgresUser and PostgresDatabase name the role and database every
// instance has. The role is a superuser, so tests can create databases
// and extensions.
const (
	PostgresUser     = "iotgate"
	PostgresDatabase = "iotgate"
)

// PostgresOptions configures StartPostgres. The zero value is a temporary
// instance on a free port.
type PostgresOptions struct {
	// Dir holds the instance (data directory and log); it must not exist
	// or be empty, and Close removes it. Empty: a new temporary directory.
	Dir string
	// Port to listen on at 127.0.0.1. Zero: a free port, kept for restarts.
	Port int
	// LogDir, if set, gets a copy of the server log when the instance is
	// closed, in a subdirectory postgres-PORT (CI artifacts, post-mortems).
	LogDir string
	// Fsync turns fsync on. Off by default: it is a throwaway instance,
	// and committed data still survives a SIGKILL of the server because
	// the kernel's page cache does (only a machine crash loses it).
	Fsync bool
	// Settings are extra postgresql.conf settings, e.g.
	// {"max_connections": "500"}.
	Settings map[string]string
}

// Postgres is a throwaway PostgreSQL cluster on 127.0.0.1, with a
// superuser role PostgresUser, a database PostgresDatabase, and trust
// authentication. Its methods are safe for concurrent use.
type Postgres struct {
	mu       sync.Mutex
	bin      string // directory of initdb and postgres
	user     runAs
	dir      string
	data     string
	logPath  string
	saveLogs string // PostgresOptions.LogDir
	port     int
	args     []string // postgres command line after -D
	proc     *process // nil when not running
	closed   bool
}

// StartPostgres creates a new cluster (initdb), starts it and waits until
// it accepts connections. The error carries the tail of the server log.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	ctx, cancel := withStartTimeout(ctx)
	defer cancel()
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	u, err := serviceUser("postgres")
	if err != nil {
		return nil, err
	}
	dir, err := makeInstanceDir("pg", opts.Dir)
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, user: u, dir: dir, data: filepath.Join(dir, "data")}
	if err := p.create(ctx, opts); err != nil {
		err = fmt.Errorf("start postgres in %s: %w\n%s", dir, err, p.LogTail())
		p.Close()
		return nil, err
	}
	return p, nil
}

// create runs initdb, starts the server and creates the database.
func (p *Postgres) create(ctx context.Context, opts PostgresOptions) error {
	port, err := portOr(opts.Port)
	if err != nil {
		return err
	}
	p.saveLogs = opts.LogDir
	p.logPath = filepath.Join(p.dir, "postgres.log")
	if err := p.user.chownTree(p.dir); err != nil {
		return err
	}
	hasDB, err := p.initdb(ctx)
	if err != nil {
		return err
	}
	fsync := "off"
	if opts.Fsync {
		fsync = "on"
	}
	settings := map[string]string{
		"listen_addresses": "127.0.0.1",
		// No unix socket: nothing uses it, and its path could be too long.
		"unix_socket_directories": "",
		"fsync":                   fsync,
		// Several test packages each open pools against one instance.
		"max_connections": "200",
		"log_line_prefix": "%m [%p] ",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	for attempt := 0; ; attempt++ {
		p.setPort(port, settings)
		mark := markLogs([]string{p.logPath})
		err := p.launch(ctx)
		if err == nil {
			break
		}
		// Someone took the port between our pick and the server's bind.
		if opts.Port == 0 && attempt < 3 && addrInUse(mark.since()) {
			if port, err = freePort(); err != nil {
				return err
			}
			continue
		}
		return err
	}
	if hasDB {
		return nil
	}
	if err := p.exec(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(PostgresDatabase)); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return nil
}

// initdb creates the data directory: a copy of a cached template cluster
// that has the database already (initdb takes seconds on a loaded machine,
// a copy a tenth of that), or, if that fails, a fresh initdb; hasDB says
// which.
func (p *Postgres) initdb(ctx context.Context) (hasDB bool, err error) {
	tmpl, err := p.template(ctx)
	if err == nil {
		_, err = runCommand(ctx, p.user, p.dir, nil, "cp", "-a", filepath.Join(tmpl, "data"), p.data)
		if err == nil {
			return true, nil
		}
		_ = os.RemoveAll(p.data)
	}
	appendFile(p.logPath, fmt.Appendf(nil, "servers: no template cluster (%v): running initdb\n", err))
	return false, p.runInitdb(ctx, p.dir, p.data)
}

// runInitdb runs initdb for data, from the working directory dir.
func (p *Postgres) runInitdb(ctx context.Context, dir, data string) error {
	// --no-sync: nothing here needs initdb's files on disk before the
	// server starts; it saves most of initdb's time.
	out, err := runCommand(ctx, p.user, dir, []string{"HOME=" + dir},
		filepath.Join(p.bin, "initdb"), "-D", data, "-U", PostgresUser,
		"--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
	appendFile(p.logPath, out)
	return err
}

// templateFormat names the way templates are made: change it when
// runInitdb's options change, so that old templates are not used.
const templateFormat = "2"

// templateMaxAge bounds a template's age: a temporary directory cleaner
// may have removed files of an old one.
const templateMaxAge = 24 * time.Hour

// template returns the directory of the machine's template cluster for
// this PostgreSQL version and service user (TMPDIR/iotgate-pgtemplate-*,
// data in its "data"), making it first if needed. Test binaries running
// at once share it; a lock file serializes making it.
func (p *Postgres) template(ctx context.Context) (string, error) {
	out, err := runCommand(ctx, runAs{}, "/", nil, filepath.Join(p.bin, "postgres"), "--version")
	if err != nil {
		return "", err
	}
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "", fmt.Errorf("postgres --version: %q", out)
	}
	version := strings.Map(func(r rune) rune {
		if r == '.' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, f[2])
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("iotgate-pgtemplate-%s-%s-u%d", templateFormat, version, p.user.uid))
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close() // closing releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock template: %w", err)
	}
	ok := filepath.Join(dir, "ok")
	if fi, err := os.Stat(ok); err == nil && time.Since(fi.ModTime()) < templateMaxAge {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	tmp := dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", err
	}
	if err := p.user.chownTree(tmp); err != nil {
		return "", err
	}
	data := filepath.Join(tmp, "data")
	if err := p.runInitdb(ctx, tmp, data); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	// The database too, in single-user mode: no server, no port.
	out, err = runCommandInput(ctx, p.user, tmp, []string{"HOME=" + tmp},
		"CREATE DATABASE "+pq.QuoteIdentifier(PostgresDatabase)+";\n",
		filepath.Join(p.bin, "postgres"), "--single", "-D", data, "-c", "fsync=off", "postgres")
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("create database in template: %w", err)
	}
	if strings.Contains(string(out), "ERROR:") {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("create database in template: %s", tailBytes(out, 10))
	}
	if err := os.WriteFile(filepath.Join(tmp, "ok"), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// setPort sets the port and the server's command line.
func (p *Postgres) setPort(port int, settings map[string]string) {
	settings["port"] = strconv.Itoa(port)
	settings["cluster_name"] = "iotgate-" + strconv.Itoa(port) // shows in ps
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	p.args = p.args[:0]
	for _, k := range keys {
		p.args = append(p.args, "-c", k+"="+settings[k])
	}
	p.port = port
}

// launch starts the postmaster and waits until it accepts queries.
func (p *Postgres) launch(ctx context.Context) error {
	proc, err := startProcess(procSpec{
		path: filepath.Join(p.bin, "postgres"),
		args: append([]string{"-D", p.data}, p.args...),
		dir:  p.data,
		env:  []string{"HOME=" + p.dir},
		user: p.user,
		log:  p.logPath,
	})
	if err != nil {
		return err
	}
	p.proc = proc
	err = waitReady(ctx, proc, func(ctx context.Context) error {
		// Talk only to our postmaster, not to whatever else holds
		// the port (the server then exits, and waitReady notices).
		if err := listening(proc.pid, p.port); err != nil {
			return err
		}
		return ping(ctx, p.dsnFor("postgres"))
	})
	if err != nil {
		_ = proc.kill()
		p.proc = nil
		return err
	}
	return nil
}

// ping connects to dsn and runs a trivial query.
func ping(ctx context.Context, dsn string) error {
	// lib/pq does not apply ctx to the startup exchange: without
	// connect_timeout, something else that accepts on the port and
	// never answers would block us forever.
	db, err := sql.Open("postgres", dsn+"&connect_timeout=2")
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// postgresBinDir finds the directory of Debian's initdb and postgres: the
// newest /usr/lib/postgresql/N/bin, or IOTGATE_PG_BINDIR, or PATH.
func postgresBinDir() (string, error) {
	if d := os.Getenv("IOTGATE_PG_BINDIR"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(path), nil
	}
	return "", errors.New("postgres: initdb not found in /usr/lib/postgresql/*/bin or PATH: install postgresql (run scripts/deps.sh)")
}

// DSN returns the URL of the database PostgresDatabase, for lib/pq or pgx.
func (p *Postgres) DSN() string { return p.dsnFor(PostgresDatabase) }

// dsnFor returns the URL of database db.
func (p *Postgres) dsnFor(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(PostgresUser),
		Host:     p.Addr(),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Addr returns the server's address, 127.0.0.1:PORT.
func (p *Postgres) Addr() string { return addr(p.port) }

// Port returns the server's port.
func (p *Postgres) Port() int { return p.port }

// Dir returns the instance directory; the data directory is Dir()/data.
func (p *Postgres) Dir() string { return p.dir }

// LogPath returns the path of the server log.
func (p *Postgres) LogPath() string { return p.logPath }

// LogTail returns the last lines of the server log, for error messages.
func (p *Postgres) LogTail() string { return tailFiles(40, p.logPath) }

// dbName is what NewDatabase accepts: a plain lower-case identifier, so
// that the DSN and the SQL need no quoting games.
var dbName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// NewDatabase creates database name (lower-case letters, digits and _) and
// returns its DSN. Tests use one database each to stay independent.
func (p *Postgres) NewDatabase(ctx context.Context, name string) (dsn string, err error) {
	if !dbName.MatchString(name) {
		return "", fmt.Errorf("database name %q: want %s", name, dbName)
	}
	if err := p.exec(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.dsnFor(name), nil
}

// DropDatabase drops database name, closing its connections.
func (p *Postgres) DropDatabase(ctx context.Context, name string) error {
	if err := p.exec(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// exec runs one statement in the maintenance database "postgres".
func (p *Postgres) exec(ctx context.Context, stmt string) error {
	db, err := sql.Open("postgres", p.dsnFor("postgres")+"&connect_timeout=10")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

// Running reports whether the server process runs.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil && !p.proc.exited()
}

// Stop shuts the server down cleanly ("fast" mode, as pg_ctl stop -m fast:
// SIGINT, which aborts open transactions) and waits for it. It kills the
// server if ctx ends first. Stopping a stopped server does nothing.
func (p *Postgres) Stop(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	err := p.proc.stop(ctx, syscall.SIGINT, time.Minute)
	p.proc = nil
	return err
}

// Kill sends SIGKILL to the postmaster and all its processes at once, as a
// crash would, and waits until they are gone. Start recovers the data.
func (p *Postgres) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	err := p.proc.kill()
	p.proc = nil
	return err
}

// Start starts a stopped or killed server again, on the same port and data
// directory, and waits until it accepts queries (after crash recovery, if
// it was killed). It returns ErrRunning if it runs, ErrClosed after Close.
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.proc != nil && !p.proc.exited() {
		return ErrRunning
	}
	ctx, cancel := withStartTimeout(ctx)
	defer cancel()
	if err := p.launch(ctx); err != nil {
		return fmt.Errorf("restart postgres on %s: %w\n%s", p.Addr(), err, p.LogTail())
	}
	return nil
}

// Close kills the server and removes the instance directory, after
// copying the log to LogDir if set. It is safe to call more than once.
func (p *Postgres) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var err error
	if p.proc != nil {
		err = p.proc.kill()
		p.proc = nil
	}
	if p.saveLogs != "" && p.logPath != "" {
		err = errors.Join(err, saveLogs(p.dir, filepath.Join(p.saveLogs, "postgres-"+strconv.Itoa(p.port))))
	}
	return errors.Join(err, CleanDir(p.dir))
}

// appendFile appends b to the file at path, best effort: it is for logs.
func appendFile(path string, b []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(b)
}
