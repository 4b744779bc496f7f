package servers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EjabberdCluster is a throwaway cluster of ejabberd nodes on loopback
// serving one domain: each node has its own c2s, component and HTTP API
// ports and its own data, the nodes share accounts, rosters and routes
// through mnesia (joined with ejabberdctl join_cluster). They find each
// other through an epmd of the cluster's own on a private port, so two
// clusters (or a standalone Ejabberd) never see each other.
type EjabberdCluster struct {
	nodes []*Ejabberd
	epmd  *process
	dir   string // the epmd's directory and log

	mu     sync.Mutex
	closed bool
}

// clusterMember is what a node of a cluster needs to know: its node name
// (without @localhost), the cluster's epmd port and cookie.
type clusterMember struct {
	Name     string
	EpmdPort int
	Cookie   string
}

// StartEjabberdCluster starts nodes ejabberd nodes (at least 2) with the
// same config (domain, component domains and secrets, opts.DomainBalancing)
// on ports of their own, joins them into one cluster and checks on every
// node that list_cluster names them all. opts.Dir, if set, gets a
// subdirectory per node; opts.C2SPort and opts.ComponentPort must be
// zero. The error carries the nodes' logs.
func StartEjabberdCluster(ctx context.Context, opts XMPPOptions, nodes int) (*EjabberdCluster, error) {
	if nodes < 2 {
		return nil, fmt.Errorf("ejabberd cluster: want at least 2 nodes, not %d", nodes)
	}
	if opts.C2SPort != 0 || opts.ComponentPort != 0 {
		return nil, errors.New("ejabberd cluster: ports are picked per node; leave C2SPort and ComponentPort zero")
	}
	// The same component secrets on every node.
	opts = opts.withDefaults()
	dirOf := func(name string) string {
		if opts.Dir == "" {
			return ""
		}
		return filepath.Join(opts.Dir, name)
	}
	dir, err := makeInstanceDir("ejabberd-epmd", dirOf("epmd"))
	if err != nil {
		return nil, err
	}
	c := &EjabberdCluster{dir: dir}
	u, err := serviceUser("ejabberd")
	if err != nil {
		c.Close()
		return nil, err
	}
	port, err := c.startEpmd(ctx, u)
	if err != nil {
		c.Close()
		return nil, err
	}
	cookie := randomHex(16)
	// Start the nodes side by side: each takes a few seconds, mostly
	// waiting.
	c.nodes = make([]*Ejabberd, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			o := opts
			o.Dir = dirOf("node" + strconv.Itoa(i+1))
			m := &clusterMember{Name: "ejabberd" + strconv.Itoa(i+1), EpmdPort: port, Cookie: cookie}
			c.nodes[i], errs[i] = startEjabberd(ctx, o, m)
		})
	}
	wg.Wait()
	c.nodes = slices.DeleteFunc(c.nodes, func(e *Ejabberd) bool { return e == nil })
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, fmt.Errorf("ejabberd cluster: %w", err)
	}
	for _, n := range c.nodes[1:] {
		if err := n.join(ctx, c.nodes[0].Node()); err != nil {
			err = fmt.Errorf("ejabberd cluster: %w\n%s", err, c.LogTail())
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitFormed(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// startEpmd starts the cluster's epmd on a free loopback port and returns
// the port.
func (c *EjabberdCluster) startEpmd(ctx context.Context, u runAs) (int, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	if err := u.chownTree(c.dir); err != nil {
		return 0, err
	}
	p, err := startProcess(procSpec{
		path: "/usr/bin/epmd",
		args: []string{"-port", strconv.Itoa(port), "-address", "127.0.0.1"},
		dir:  c.dir,
		user: u,
		log:  filepath.Join(c.dir, "epmd.log"),
	})
	if err != nil {
		return 0, err
	}
	c.epmd = p
	err = waitReady(ctx, p, func(context.Context) error {
		if !accepts(addr(port)) {
			return fmt.Errorf("epmd on %s does not accept connections", addr(port))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("start epmd: %w\n%s", err, tailFile(filepath.Join(c.dir, "epmd.log"), 20))
	}
	return port, nil
}

// join makes e join the cluster of node with ejabberdctl join_cluster
// (which restarts ejabberd on e, without its VM) and waits until e's
// ports accept again.
//
// join_cluster sometimes fails (seen 1 in ~10 starts with 23.01, right
// after the nodes came up, and once after 3 tries 1 s apart on a loaded
// machine). It stops ejabberd and mnesia on e before it joins, and when
// it fails half way it can leave e without them ({no_exists,
// ejabberd_commands} on every later ejabberdctl call) or take the whole
// node down (nodedown). So before each new try join looks at e: if e is
// in the cluster after all, it is done; if e does not answer list_cluster,
// e is killed and started again.
func (e *Ejabberd) join(ctx context.Context, node string) error {
	var err error
	for attempt := range 6 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
			nodes, lerr := e.ClusterNodes(ctx)
			if lerr == nil && slices.Contains(nodes, node) {
				return e.waitAccepting(ctx)
			}
			if lerr != nil {
				slog.Warn("ejabberd cluster: node broken by a failed join, restarting it", "node", e.Node(), "join_err", err, "list_cluster_err", lerr)
				e.Kill()
				if serr := e.Start(ctx); serr != nil {
					return fmt.Errorf("%s: join_cluster %s: %w; restarting the node: %w", e.Node(), node, err, serr)
				}
			}
		}
		err = e.joinOnce(ctx, node)
		if err == nil {
			return e.waitAccepting(ctx)
		}
	}
	return fmt.Errorf("%s: join_cluster %s: %w", e.Node(), node, err)
}

// joinOnce runs ejabberdctl join_cluster node on e. A test may replace
// it to break a node the way a failed join does.
var joinOnce = func(e *Ejabberd, ctx context.Context, node string) error {
	_, err := runCommand(ctx, e.user, e.spool, e.env(), e.ctl,
		"--config-dir", e.etc,
		"--ctl-config", filepath.Join(e.etc, "ejabberdctl.cfg"),
		"--logs", e.logDir,
		"--spool", e.spool,
		"--node", e.Node(),
		"join_cluster", node)
	return err
}

func (e *Ejabberd) joinOnce(ctx context.Context, node string) error { return joinOnce(e, ctx, node) }

// waitAccepting waits until the node's c2s, component and API ports
// accept connections.
func (e *Ejabberd) waitAccepting(ctx context.Context) error {
	e.mu.Lock()
	ports := append([]int{e.c2sPort, e.compPort}, e.extraPorts...)
	e.mu.Unlock()
	for {
		down := ""
		for _, p := range ports {
			if !accepts(addr(p)) {
				down = addr(p)
				break
			}
		}
		if down == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s does not accept connections: %w", e.Node(), down, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ClusterNodes returns the nodes of the node's cluster, as its
// list_cluster command says, sorted.
func (e *Ejabberd) ClusterNodes(ctx context.Context) ([]string, error) {
	var nodes []string
	if err := e.call(ctx, "list_cluster", struct{}{}, &nodes); err != nil {
		return nil, fmt.Errorf("%s: list_cluster: %w", e.Node(), err)
	}
	slices.Sort(nodes)
	return nodes, nil
}

// WaitFormed waits until every running node's list_cluster names every
// node of the cluster, and fails with what they say and their logs if
// that does not happen within 30 s (or before ctx ends).
func (c *EjabberdCluster) WaitFormed(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var want []string
	for _, n := range c.nodes {
		want = append(want, n.Node())
	}
	slices.Sort(want)
	for {
		var problems []string
		for _, n := range c.nodes {
			if !n.Running() {
				continue
			}
			got, err := n.ClusterNodes(ctx)
			if err == nil && !slices.Equal(got, want) {
				err = fmt.Errorf("%s: list_cluster says %v, want %v", n.Node(), got, want)
			}
			if err == nil {
				err = n.waitAccepting(ctx)
			}
			if err != nil {
				problems = append(problems, err.Error())
			}
		}
		if len(problems) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ejabberd cluster did not form: %s\n%s", strings.Join(problems, "; "), c.LogTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Nodes returns the nodes, in the order they were started; the first is
// the one the others joined.
func (c *EjabberdCluster) Nodes() []*Ejabberd { return slices.Clone(c.nodes) }

// Node returns node i (from 0).
func (c *EjabberdCluster) Node(i int) *Ejabberd { return c.nodes[i] }

// Domain returns the domain users log in to, on any node.
func (c *EjabberdCluster) Domain() string { return c.nodes[0].Domain() }

// ComponentSecret returns the secret of a component domain, the same on
// every node.
func (c *EjabberdCluster) ComponentSecret(domain string) string {
	return c.nodes[0].ComponentSecret(domain)
}

// Components returns the component domains, sorted.
func (c *EjabberdCluster) Components() []string { return c.nodes[0].Components() }

// RegisterUser creates user@Domain() (or sets its password) on the first
// running node; mnesia shares accounts with the others.
func (c *EjabberdCluster) RegisterUser(ctx context.Context, user, password string) error {
	for _, n := range c.nodes {
		if n.Running() {
			return n.RegisterUser(ctx, user, password)
		}
	}
	return errors.New("ejabberd cluster: no node runs")
}

// LogTail returns the last lines of every node's logs, and the epmd's.
func (c *EjabberdCluster) LogTail() string {
	var sb strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&sb, "--- %s (c2s %s):\n%s\n", n.Node(), n.C2SAddr(), n.LogTail())
	}
	fmt.Fprintf(&sb, "--- epmd:\n%s", tailFile(filepath.Join(c.dir, "epmd.log"), 10))
	return sb.String()
}

// Close kills every node and the epmd and removes their directories. It
// is safe to call more than once.
func (c *EjabberdCluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var err error
	for _, n := range c.nodes {
		err = errors.Join(err, n.Close())
	}
	if c.epmd != nil {
		err = errors.Join(err, c.epmd.kill())
	}
	if c.dir != "" {
		err = errors.Join(err, CleanDir(c.dir))
	}
	if c.dir != "" && filepath.Base(c.dir) == "epmd" {
		// The cluster's own opts.Dir, now empty of instances.
		_ = os.Remove(filepath.Dir(c.dir))
	}
	return err
}
