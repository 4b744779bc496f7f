package servers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// XMPPServer is a throwaway XMPP server with one client-to-server (c2s)
// listener and one XEP-0114 component listener, both on 127.0.0.1.
// *Prosody and *Ejabberd implement it, so tests can run against both.
type XMPPServer interface {
	// Name is "prosody" or "ejabberd".
	Name() string
	// Domain is the c2s virtual host users log in to, e.g. "localhost".
	Domain() string
	// C2SAddr is the c2s listener, 127.0.0.1:PORT. It offers STARTTLS
	// with a self-signed certificate and does not require it; PLAIN works
	// without TLS.
	C2SAddr() string
	// ComponentAddr is the XEP-0114 listener, 127.0.0.1:PORT, shared by
	// all components unless XMPPOptions.SeparateComponentListeners.
	ComponentAddr() string
	// ComponentAddrOf is the XEP-0114 listener that component domain
	// must connect to: ComponentAddr, unless the server was started with
	// XMPPOptions.SeparateComponentListeners.
	ComponentAddrOf(domain string) string
	// ComponentSecret returns the handshake secret of a component domain,
	// or "" if the server has no such component.
	ComponentSecret(domain string) string
	// Components returns the component domains, sorted.
	Components() []string
	// RegisterUser creates the account user@Domain() with password, or
	// sets its password if it exists.
	RegisterUser(ctx context.Context, user, password string) error
	// Running reports whether the server process runs.
	Running() bool
	// Stop shuts the server down cleanly and waits for it; it kills it if
	// ctx ends first. Stopping a stopped server does nothing.
	Stop(ctx context.Context) error
	// Kill sends SIGKILL to the whole process tree and waits until it is
	// gone.
	Kill() error
	// Start starts a stopped or killed server again on the same ports and
	// data, and waits until the c2s and component ports accept. It returns
	// ErrRunning if it runs and ErrClosed after Close.
	Start(ctx context.Context) error
	// Close kills the server and removes its directory. It is safe to call
	// more than once.
	Close() error
	// LogTail returns the last lines of the server's logs.
	LogTail() string
}

// XMPPOptions configures StartProsody and StartEjabberd. The zero value is
// a temporary server for "localhost" with one component "iot.localhost"
// with a random secret, on free ports.
type XMPPOptions struct {
	// Domain is the c2s virtual host. Default "localhost".
	Domain string
	// Components maps each component domain to its secret. Default: one
	// component "iot."+Domain with a random secret.
	Components map[string]string
	// KickOldComponent makes a second connection of a component replace
	// the first (Prosody's component_conflict_resolve = "kick_old"); by
	// default Prosody refuses the newcomer. ejabberd has no such setting:
	// it accepts both connections and routes to either.
	KickOldComponent bool
	// Dir holds the instance (config, data, logs); it must not exist or be
	// empty, and Close removes it. Empty: a new temporary directory.
	Dir string
	// LogDir, if set, gets a copy of the logs when the server is closed,
	// in a subdirectory NAME-C2SPORT (CI artifacts, post-mortems).
	LogDir string
	// C2SPort and ComponentPort are the ports to listen on. Zero: free
	// ports, kept for restarts.
	C2SPort, ComponentPort int
	// Debug turns on the server's debug logging (every stanza).
	Debug bool
	// SeparateComponentListeners gives each component domain a
	// listener of its own on ejabberd (ComponentAddrOf says which): a
	// connection to ejabberd's shared listener gets the routes of every
	// domain on it, so with one listener two different components would
	// receive each other's stanzas. Prosody routes by domain; there the
	// option changes nothing.
	SeparateComponentListeners bool
	// C2SMaxStanzaBytes is the largest stanza a client may send:
	// Prosody's c2s_stanza_size_limit, ejabberd's max_stanza_size on the
	// c2s listener. Zero: 256 KiB, both servers' usual default. Neither
	// limits what it forwards to a component.
	C2SMaxStanzaBytes int
	// S2SAddrs turns on federation: the server listens for
	// server-to-server streams on port S2SPort of each of these IPv4
	// loopback addresses (see FreeS2SIP), authenticates peers by
	// dialback (TLS offered, certificates not verified: they are
	// self-signed) and connects to a peer at port S2SPort of its domain.
	// With IP-literal domains that needs no DNS: a server whose domain
	// (or whose component's domain) is 127.a.b.c lists 127.a.b.c here.
	// Empty: no s2s at all.
	S2SAddrs []string
	// DomainBalancing, if set, is ejabberd's domain_balancing for every
	// component domain: how stanzas addressed to the domain are spread
	// over several connections of the component. Zero: no
	// domain_balancing (ejabberd picks a connection on the receiving
	// node at random, any node's if it has none). Prosody ignores it.
	DomainBalancing *DomainBalancing
	// ModRest (Prosody only; ejabberd ignores it) loads the community
	// module mod_rest (Debian trixie's prosody-modules, fetched by
	// scripts/deps.sh into ProsodyModulesDir) on a VirtualHost
	// "rest."+Domain of its own, behind mod_http on a free loopback
	// port: POST a stanza to Prosody.ModRestURL() with HTTP Basic auth
	// of Prosody.ModRestUser() and it is sent from that user (a bare
	// JID); an IQ's answer is the response. Domain must be a name, not
	// an IP literal.
	ModRest bool
}

// DomainBalancing is one entry of ejabberd's domain_balancing option.
type DomainBalancing struct {
	// Type is random, source, destination, bare_source or
	// bare_destination; empty: ejabberd's default (random).
	Type string
	// ComponentNumber is the number of connection slots (2 to 1000);
	// zero leaves it out.
	ComponentNumber int
}

// withDefaults returns opts with defaults filled in; it does not modify
// the caller's map.
func (opts XMPPOptions) withDefaults() XMPPOptions {
	if opts.Domain == "" {
		opts.Domain = "localhost"
	}
	if opts.C2SMaxStanzaBytes <= 0 {
		opts.C2SMaxStanzaBytes = 256 << 10
	}
	opts.S2SAddrs = slices.Clone(opts.S2SAddrs)
	if len(opts.Components) == 0 {
		opts.Components = map[string]string{"iot." + opts.Domain: randomHex(12)}
	} else {
		opts.Components = maps.Clone(opts.Components)
	}
	return opts
}

// xmppServer is what Prosody and Ejabberd share: ports, directories and
// the process's life cycle. The server-specific parts are the functions
// spec, logs, configure and newPorts.
type xmppServer struct {
	mu         sync.Mutex
	name       string
	user       runAs
	dir        string
	logDir     string // where the logs are written: the instance dir
	saveLogs   string // XMPPOptions.LogDir
	domain     string
	components map[string]string
	c2sPort    int
	compPort   int
	extraPorts []int // more ports that must accept before the server is ready
	// ownCompPorts are the listeners of components that don't share
	// compPort (XMPPOptions.SeparateComponentListeners on ejabberd).
	ownCompPorts map[string]int
	s2sAddrs     []string // XMPPOptions.S2SAddrs
	proc         *process
	closed       bool
	stopSig      syscall.Signal
	spec         func() procSpec // the command line; config written before
	logs         func() []string // log files, for LogTail
	configure    func() error    // (re)writes the config for the current ports
	newPorts     func() error    // picks new free ports after a bind conflict
	autoPorts    bool            // ports were picked by us, so may be re-picked
}

// newXMPPServer prepares the shared part: directories and ports.
func newXMPPServer(name string, opts XMPPOptions) (*xmppServer, error) {
	if err := checkS2SAddrs(opts.S2SAddrs); err != nil {
		return nil, err
	}
	u, err := serviceUser(name)
	if err != nil {
		return nil, err
	}
	s := &xmppServer{
		name:       name,
		user:       u,
		domain:     opts.Domain,
		components: opts.Components,
		s2sAddrs:   opts.S2SAddrs,
		stopSig:    syscall.SIGTERM,
		autoPorts:  opts.C2SPort == 0 && opts.ComponentPort == 0,
	}
	if s.c2sPort, err = portOr(opts.C2SPort); err != nil {
		return nil, err
	}
	if s.compPort, err = portOr(opts.ComponentPort); err != nil {
		return nil, err
	}
	if s.dir, err = makeInstanceDir(name, opts.Dir); err != nil {
		return nil, err
	}
	s.logDir = s.dir
	s.saveLogs = opts.LogDir
	return s, nil
}

// first starts the server the first time, picking new ports if another
// process took ours in the meantime. On error the instance is closed.
func (s *xmppServer) first(ctx context.Context) error {
	ctx, cancel := withStartTimeout(ctx)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		mark := markLogs(s.logs())
		err := s.configure()
		if err == nil {
			err = s.user.chownTree(s.dir)
		}
		if err == nil {
			err = s.launch(ctx)
		}
		if err == nil {
			return nil
		}
		if s.autoPorts && attempt < 3 && addrInUse(mark.since()) {
			if err = s.newPorts(); err == nil {
				continue
			}
		}
		err = fmt.Errorf("start %s in %s: %w\n%s", s.name, s.dir, err, s.logTail())
		s.closeLocked()
		return err
	}
}

// launch starts the process and waits until its ports accept.
func (s *xmppServer) launch(ctx context.Context) error {
	proc, err := startProcess(s.spec())
	if err != nil {
		return err
	}
	s.proc = proc
	ports := append([]int{s.c2sPort, s.compPort}, s.extraPorts...)
	var addrs []string
	for _, p := range ports {
		addrs = append(addrs, addr(p))
	}
	if len(s.s2sAddrs) > 0 {
		ports = append(ports, S2SPort)
		for _, ip := range s.s2sAddrs {
			addrs = append(addrs, s2sAddr(ip))
		}
	}
	mark := markLogs(s.logs())
	err = waitReady(ctx, proc, func(ctx context.Context) error {
		if err := listening(proc.pid, ports...); err != nil {
			if addrInUse(mark.since()) {
				return fatalError{err}
			}
			return err
		}
		// Listening is not always accepting: Erlang listens before
		// it accepts.
		for _, a := range addrs {
			if !accepts(a) {
				return fmt.Errorf("%s does not accept connections", a)
			}
		}
		return nil
	})
	if err != nil {
		_ = proc.kill()
		s.proc = nil
		return err
	}
	return nil
}

// Name returns "prosody" or "ejabberd".
func (s *xmppServer) Name() string { return s.name }

// Domain returns the c2s virtual host.
func (s *xmppServer) Domain() string { return s.domain }

// C2SAddr returns the c2s address, 127.0.0.1:PORT.
func (s *xmppServer) C2SAddr() string { return addr(s.c2sPort) }

// ComponentAddr returns the XEP-0114 address, 127.0.0.1:PORT.
func (s *xmppServer) ComponentAddr() string { return addr(s.compPort) }

// ComponentAddrOf returns the XEP-0114 address for component domain:
// its own listener if it has one, else ComponentAddr.
func (s *xmppServer) ComponentAddrOf(domain string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.ownCompPorts[domain]; ok {
		return addr(p)
	}
	return addr(s.compPort)
}

// ComponentSecret returns the secret of component domain, or "".
func (s *xmppServer) ComponentSecret(domain string) string { return s.components[domain] }

// Components returns the component domains, sorted.
func (s *xmppServer) Components() []string {
	return slices.Sorted(maps.Keys(s.components))
}

// Dir returns the instance directory.
func (s *xmppServer) Dir() string { return s.dir }

// LogTail returns the last lines of the server's logs.
func (s *xmppServer) LogTail() string { return s.logTail() }

func (s *xmppServer) logTail() string { return tailFiles(40, s.logs()...) }

// Running reports whether the server process runs.
func (s *xmppServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it.
func (s *xmppServer) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.stop(ctx, s.stopSig, time.Minute)
	s.proc = nil
	return err
}

// Kill sends SIGKILL to the server's process tree and waits for it.
func (s *xmppServer) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.kill()
	s.proc = nil
	return err
}

// Start starts the server again on the same ports and data.
func (s *xmppServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.proc != nil && !s.proc.exited() {
		return ErrRunning
	}
	ctx, cancel := withStartTimeout(ctx)
	defer cancel()
	if err := s.launch(ctx); err != nil {
		return fmt.Errorf("restart %s on %s: %w\n%s", s.name, s.C2SAddr(), err, s.logTail())
	}
	return nil
}

// Close kills the server and removes its directory.
func (s *xmppServer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked()
}

func (s *xmppServer) closeLocked() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.proc != nil {
		err = s.proc.kill()
		s.proc = nil
	}
	if s.saveLogs != "" {
		err = errors.Join(err, saveLogs(s.logDir, filepath.Join(s.saveLogs, s.name+"-"+strconv.Itoa(s.c2sPort))))
	}
	return errors.Join(err, CleanDir(s.dir))
}

// quoteString quotes s for YAML and Lua configs alike: a JSON string is a
// valid YAML double-quoted scalar, and for the printable ASCII that
// domains and secrets use, a valid Lua string too.
func quoteString(s string) (string, error) {
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return "", fmt.Errorf("%q: only printable ASCII is supported in server configs", s)
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	// json.Marshal escapes <, > and & as \u003c etc., which Lua does not
	// read; they need no escaping in either language.
	q := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(string(b))
	return q, nil
}

// quoteAll quotes each string with quoteString, stopping at the first
// error.
func quoteAll(ss ...string) ([]string, error) {
	out := make([]string, len(ss))
	for i, s := range ss {
		q, err := quoteString(s)
		if err != nil {
			return nil, err
		}
		out[i] = q
	}
	return out, nil
}

// certNames returns the names the server certificate covers.
func certNames(domain string, components map[string]string) []string {
	names := []string{domain, "*." + domain}
	for c := range components {
		names = append(names, c)
	}
	if domain != "localhost" {
		names = append(names, "localhost")
	}
	slices.Sort(names[2:])
	return names
}
