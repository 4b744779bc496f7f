package servers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
)

// Ejabberd is a throwaway ejabberd server (Debian's ejabberd package,
// 23.01), run in the foreground by ejabberdctl from its own config
// directory. It has an HTTP API listener on 127.0.0.1 (mod_http_api, open
// to loopback) that RegisterUser uses, so no extra Erlang VM is started per
// command. Erlang distribution listens on a port of its own (no epmd), so
// instances don't see each other. Its methods are documented on
// XMPPServer, which it implements.
type Ejabberd struct {
	*xmppServer
	httpPort int
	distPort int
	etc      string
	spool    string
	cert     certFiles
	client   *http.Client
	member   *clusterMember // nil: a standalone server
	ctl      string         // the ejabberdctl script

	regMu  sync.Mutex
	recent []registration // registrations that a SIGKILL may still lose
	replay []registration // lost by the last Kill, to redo at Start
}

// registration is one RegisterUser call.
type registration struct {
	user, password string
	at             time.Time
}

// detsWindow is how long ejabberd may hold an account change in memory
// before its dets table file has it: a SIGKILL within that time loses the
// change (measured: about 2 s; a clean stop loses nothing).
const detsWindow = 10 * time.Second

var _ XMPPServer = (*Ejabberd)(nil)

// StartEjabberd writes a config for opts, starts ejabberd and waits until
// its c2s, component and API ports accept. The error carries the tail of
// its log.
func StartEjabberd(ctx context.Context, opts XMPPOptions) (*Ejabberd, error) {
	return startEjabberd(ctx, opts, nil)
}

// startEjabberd is StartEjabberd, as a member of a cluster if member is
// set.
func startEjabberd(ctx context.Context, opts XMPPOptions, member *clusterMember) (*Ejabberd, error) {
	opts = opts.withDefaults()
	ctl, err := ejabberdctlPath()
	if err != nil {
		return nil, err
	}
	base, err := newXMPPServer("ejabberd", opts)
	if err != nil {
		return nil, err
	}
	e := &Ejabberd{
		xmppServer: base,
		etc:        filepath.Join(base.dir, "etc"),
		spool:      filepath.Join(base.dir, "spool"),
		client:     &http.Client{Timeout: 30 * time.Second},
		member:     member,
	}
	if err := e.prepare(ctl, opts); err != nil {
		base.Close()
		return nil, err
	}
	if err := base.first(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// prepare picks the extra ports, writes the certificate and sets up how
// the shared code starts and configures the server.
func (e *Ejabberd) prepare(ctl string, opts XMPPOptions) error {
	var err error
	if e.httpPort, err = freePort(); err != nil {
		return err
	}
	if e.distPort, err = freePort(); err != nil {
		return err
	}
	for _, d := range []string{e.etc, e.spool} {
		if err := os.Mkdir(d, 0o750); err != nil {
			return err
		}
	}
	if e.cert, err = writeCert(e.etc, certNames(opts.Domain, opts.Components)); err != nil {
		return err
	}
	// As root, ejabberdctl would su to the ejabberd user itself, in a new
	// session we could not kill as a group; we switch user ourselves. Any
	// other user than ejabberd is refused by the script (INSTALLUSER), so
	// it gets a copy that names it.
	if e.user.cred == nil && e.user.name != "ejabberd" {
		if ctl, err = patchEjabberdctl(ctl, e.etc, e.user.name); err != nil {
			return err
		}
	}
	if opts.SeparateComponentListeners {
		// The first domain keeps the shared port; the others get
		// their own.
		e.ownCompPorts = map[string]int{}
		for _, d := range e.Components()[1:] {
			if e.ownCompPorts[d], err = freePort(); err != nil {
				return err
			}
		}
	}
	e.ctl = ctl
	e.extraPorts = e.allExtraPorts()
	e.spec = func() procSpec {
		return procSpec{
			path: ctl,
			args: []string{
				"--config-dir", e.etc,
				"--ctl-config", filepath.Join(e.etc, "ejabberdctl.cfg"),
				"--logs", e.logDir,
				"--spool", e.spool,
				"foreground",
			},
			dir: e.spool,
			// HOME holds the Erlang cookie.
			env:  e.env(),
			user: e.user,
			log:  filepath.Join(e.logDir, "console.log"),
		}
	}
	e.logs = func() []string {
		return []string{filepath.Join(e.logDir, "console.log"), filepath.Join(e.logDir, "error.log")}
	}
	e.configure = func() error { return e.writeConfig(opts) }
	e.newPorts = func() (err error) {
		for _, p := range []*int{&e.c2sPort, &e.compPort, &e.httpPort, &e.distPort} {
			if *p, err = freePort(); err != nil {
				return err
			}
		}
		for d := range e.ownCompPorts {
			if e.ownCompPorts[d], err = freePort(); err != nil {
				return err
			}
		}
		e.extraPorts = e.allExtraPorts()
		return nil
	}
	return nil
}

// allExtraPorts returns the ports beyond c2s and the shared component
// port that must accept before the server is ready.
func (e *Ejabberd) allExtraPorts() []int {
	ports := []int{e.httpPort}
	for _, d := range e.Components() {
		if p, ok := e.ownCompPorts[d]; ok {
			ports = append(ports, p)
		}
	}
	return ports
}

// ejabberdctlPath finds Debian's ejabberdctl (in /usr/sbin, which is not
// on every user's PATH).
func ejabberdctlPath() (string, error) {
	if p, err := exec.LookPath("ejabberdctl"); err == nil {
		return p, nil
	}
	const p = "/usr/sbin/ejabberdctl"
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("ejabberd not installed (run scripts/deps.sh): %w", err)
	}
	return p, nil
}

// patchEjabberdctl writes a copy of the ejabberdctl script into dir that
// accepts to run as user.
func patchEjabberdctl(ctl, dir, user string) (string, error) {
	b, err := os.ReadFile(ctl)
	if err != nil {
		return "", err
	}
	b = bytes.Replace(b, []byte("\nINSTALLUSER=ejabberd\n"), []byte("\nINSTALLUSER="+user+"\n"), 1)
	path := filepath.Join(dir, "ejabberdctl")
	return path, os.WriteFile(path, b, 0o755)
}

// ejabberdctlConfig is the template of ejabberdctl.cfg, a shell fragment.
var ejabberdctlConfig = template.Must(template.New("ejabberdctl").Parse(`# Generated by iotgate's internal/servers for a throwaway instance.
{{- if .Member}}
# A cluster member: the cluster's own epmd on a private port, so that
# its nodes find each other and no other instance, and one cookie.
ERLANG_NODE={{.Member.Name}}@localhost
export ERL_EPMD_PORT={{.Member.EpmdPort}}
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1} -setcookie {{.Member.Cookie}}"
{{- else}}
# A node name and distribution port of its own: with ERL_DIST_PORT set,
# ejabberdctl starts no epmd and instances cannot collide.
ERLANG_NODE=ejabberd{{.DistPort}}@localhost
ERL_DIST_PORT={{.DistPort}}
# Distribution on loopback only (INET_DIST_INTERFACE would cost an extra
# Erlang VM start per command).
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"
{{- end}}
EJABBERD_PID_PATH={{.Etc}}/ejabberd.pid
CONTRIB_MODULES_PATH={{.Dir}}/contrib
CONTRIB_MODULES_CONF_DIR={{.Etc}}/modules.d
EJABBERD_BYPASS_WARNINGS=true
`))

// ejabberdConfig is the template of ejabberd.yml. Strings arrive quoted.
var ejabberdConfig = template.Must(template.New("ejabberd").Parse(`# Generated by iotgate's internal/servers for a throwaway instance.
loglevel: {{.Level}}
log_rotate_count: 0
hosts:
  - {{.Domain}}
certfiles:
  - {{.Cert}}
listen:
  -
    port: {{.C2SPort}}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: {{.C2SMax}}
    access: c2s
    # Offered, not required: simple test clients log in with PLAIN.
    starttls: true
    starttls_required: false
    # ejabberd's default backlog is 5: too small for load tests.
    backlog: 1024
{{- range .Services}}
  -
    port: {{.Port}}
    ip: "127.0.0.1"
    module: ejabberd_service
    backlog: 1024
    hosts:
{{- range .Components}}
      {{.Domain}}:
        password: {{.Secret}}
{{- end}}
{{- end}}
  -
    port: {{.HTTPPort}}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
{{- range .S2S}}
  -
    port: {{$.S2SPort}}
    ip: {{.}}
    module: ejabberd_s2s_in
{{- end}}
{{- if .S2S}}
# Federation over IP-literal domains (no DNS here): peers are reached on
# port 5269 of their domain's IP. Dialback authenticates, since the
# self-signed certificates can't.
s2s_use_starttls: optional
# IP-literal domains skip the SRV lookup; getaddrinfo parses them.
outgoing_s2s_families:
  - ipv4
{{- end}}
{{- if .Balancing}}
domain_balancing:
{{- range $.Services}}{{range .Components}}
  {{.Domain}}:
{{- if $.Balancing.Type}}
    type: {{$.Balancing.Type}}
{{- end}}
{{- if $.Balancing.ComponentNumber}}
    component_number: {{$.Balancing.ComponentNumber}}
{{- end}}
{{- end}}{{end}}
{{- end}}
auth_method: internal
auth_password_format: scram
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
# Everything on the API from loopback, without credentials: RegisterUser
# uses it. The instance listens on loopback only.
api_permissions:
  "loopback":
    who:
      ip: 127.0.0.0/8
    what: "*"
# No shapers: load tests must not be throttled.
modules:
  # For the change_password command of the API.
  mod_admin_extra: {}
  mod_disco: {}
  mod_offline: {}
  mod_ping: {}
  mod_roster: {}
  mod_stream_mgmt: {}
  mod_version: {}
  mod_carboncopy: {}
{{- if .S2S}}
  mod_s2s_dialback: {}
{{- end}}
`))

// writeConfig writes ejabberd.yml, ejabberdctl.cfg and inetrc for the
// current ports.
func (e *Ejabberd) writeConfig(opts XMPPOptions) error {
	q, err := quoteAll(opts.Domain, e.cert.both)
	if err != nil {
		return err
	}
	type component struct{ Domain, Secret string }
	type service struct {
		Port       int
		Components []component
	}
	// One listener for the components sharing CompPort, one for each
	// component with a port of its own.
	services := []service{{Port: e.compPort}}
	for _, d := range e.Components() {
		c, err := quoteAll(d, e.components[d])
		if err != nil {
			return err
		}
		if p, ok := e.ownCompPorts[d]; ok {
			services = append(services, service{Port: p, Components: []component{{c[0], c[1]}}})
			continue
		}
		services[0].Components = append(services[0].Components, component{c[0], c[1]})
	}
	level := "info"
	if opts.Debug {
		level = "debug"
	}
	s2s, err := quoteAll(e.s2sAddrs...)
	if err != nil {
		return err
	}
	var yml, ctl strings.Builder
	err = ejabberdConfig.Execute(&yml, map[string]any{
		"Level": level, "Domain": q[0], "Cert": q[1], "Services": services,
		"C2SPort": e.c2sPort, "HTTPPort": e.httpPort, "C2SMax": opts.C2SMaxStanzaBytes, "S2S": s2s, "S2SPort": S2SPort,
		"Balancing": opts.DomainBalancing,
	})
	if err != nil {
		return err
	}
	if strings.ContainsAny(e.dir, " \"'$`\\") {
		return fmt.Errorf("ejabberd: instance dir %q must not contain shell metacharacters", e.dir)
	}
	err = ejabberdctlConfig.Execute(&ctl, map[string]any{"DistPort": e.distPort, "Etc": e.etc, "Dir": e.dir, "Member": e.member})
	if err != nil {
		return err
	}
	files := map[string]string{
		"ejabberd.yml":    yml.String(),
		"ejabberdctl.cfg": ctl.String(),
		// Erlang's resolver: "localhost" (in the node name) without DNS.
		"inetrc": "{lookup,[\"file\",\"native\"]}.\n{host,{127,0,0,1}, [\"localhost\"]}.\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(e.etc, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ejabberdErrAlreadyRegistered is mod_http_api's error code for
// "register" on an existing account.
const ejabberdErrAlreadyRegistered = 10090

// RegisterUser creates user@Domain() with password, or sets its password,
// through the HTTP API.
func (e *Ejabberd) RegisterUser(ctx context.Context, user, password string) error {
	err := e.api(ctx, "register", map[string]string{"user": user, "host": e.domain, "password": password})
	var apiErr *ejabberdAPIError
	if errors.As(err, &apiErr) && apiErr.Code == ejabberdErrAlreadyRegistered {
		err = e.api(ctx, "change_password", map[string]string{"user": user, "host": e.domain, "newpass": password})
	}
	if err != nil {
		return fmt.Errorf("ejabberd: register %s@%s: %w", user, e.domain, err)
	}
	e.regMu.Lock()
	defer e.regMu.Unlock()
	now := time.Now()
	e.recent = append(slices.DeleteFunc(e.recent, func(r registration) bool {
		return now.Sub(r.at) > detsWindow
	}), registration{user, password, now})
	return nil
}

// Kill sends SIGKILL to ejabberd's process tree and waits until it is
// gone. Account changes made shortly before are lost by ejabberd (they are
// not yet in its dets files); Start makes them again, so that a test sees
// what a server with durable storage would do.
func (e *Ejabberd) Kill() error {
	err := e.xmppServer.Kill()
	e.regMu.Lock()
	defer e.regMu.Unlock()
	now := time.Now()
	for _, r := range e.recent {
		if now.Sub(r.at) <= detsWindow {
			e.replay = append(e.replay, r)
		}
	}
	e.recent = nil
	return err
}

// Stop shuts ejabberd down cleanly (SIGTERM), which writes all account
// changes to disk, and waits for it.
func (e *Ejabberd) Stop(ctx context.Context) error {
	err := e.xmppServer.Stop(ctx)
	if err == nil {
		e.regMu.Lock()
		e.recent = nil
		e.regMu.Unlock()
	}
	return err
}

// Start starts ejabberd again on the same ports and data, waits until its
// ports accept, and redoes the account changes the last Kill lost.
func (e *Ejabberd) Start(ctx context.Context) error {
	if err := e.xmppServer.Start(ctx); err != nil {
		return err
	}
	e.regMu.Lock()
	replay := e.replay
	e.replay = nil
	e.regMu.Unlock()
	for _, r := range replay {
		if err := e.RegisterUser(ctx, r.user, r.password); err != nil {
			return fmt.Errorf("redo registration lost by kill: %w", err)
		}
	}
	return nil
}

// ejabberdAPIError is an error answer of mod_http_api.
type ejabberdAPIError struct {
	Status  string `json:"status"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *ejabberdAPIError) Error() string {
	return fmt.Sprintf("ejabberd API error %d: %s", e.Code, e.Message)
}

// api calls command on the HTTP API with args.
func (e *Ejabberd) api(ctx context.Context, command string, args any) error {
	return e.call(ctx, command, args, nil)
}

// call calls command on the HTTP API with args and decodes a successful
// answer into out, unless out is nil.
func (e *Ejabberd) call(ctx context.Context, command string, args, out any) error {
	body, err := json.Marshal(args)
	if err != nil {
		return err
	}
	url := "http://" + addr(e.httpPort) + "/api/" + command
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		if out == nil {
			return nil
		}
		return json.Unmarshal(b, out)
	}
	apiErr := &ejabberdAPIError{}
	if json.Unmarshal(b, apiErr) == nil && apiErr.Status == "error" {
		return apiErr
	}
	return fmt.Errorf("%s: HTTP %d: %s", command, resp.StatusCode, strings.TrimSpace(string(b)))
}

// APIAddr returns the address of the HTTP API listener (mod_http_api at
// /api), open without credentials from loopback.
func (e *Ejabberd) APIAddr() string { return addr(e.httpPort) }

// Node returns the Erlang node name, for ejabberdctl --node.
func (e *Ejabberd) Node() string {
	if e.member != nil {
		return e.member.Name + "@localhost"
	}
	return "ejabberd" + strconv.Itoa(e.distPort) + "@localhost"
}

// env is the environment of ejabberdctl, for the server and for commands.
func (e *Ejabberd) env() []string { return []string{"HOME=" + e.dir} }
