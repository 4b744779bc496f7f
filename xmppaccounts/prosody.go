package xmppaccounts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// ProsodyConfig says how to run prosodyctl beside Prosody.
type ProsodyConfig struct {
	// Prosodyctl is the command, split at spaces into a program and its
	// first arguments; default "prosodyctl" (on PATH). It must write
	// the accounts as the server's user: run iotgate as that user, or
	// give a command that switches to it, such as
	// "sudo -n -u prosody prosodyctl".
	Prosodyctl string
	// Config is the server's prosody.cfg.lua, passed as --config; ""
	// lets prosodyctl find it (/etc/prosody/prosody.cfg.lua).
	Config string
	// Timeout bounds one run; default DefaultTimeout.
	Timeout time.Duration
}

// Prosody creates and removes accounts with prosodyctl adduser and
// deluser, which write the server's account storage directly (the running
// server reads it at login). iotgate must run on the server's host as a
// user that may write that storage.
type Prosody struct {
	cfg ProsodyConfig
}

var _ devices.AccountProvisioner = (*Prosody)(nil)

// NewProsody returns a Prosody for cfg.
func NewProsody(cfg ProsodyConfig) *Prosody {
	if cfg.Prosodyctl == "" {
		cfg.Prosodyctl = "prosodyctl"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	return &Prosody{cfg: cfg}
}

// maxOutput bounds what is kept of prosodyctl's output.
const maxOutput = 64 << 10

// CreateAccount runs prosodyctl adduser, with the password on its
// standard input (never in its arguments, which other users can read).
// Errors: as devices.AccountProvisioner says.
func (p *Prosody) CreateAccount(ctx context.Context, jid, password string) error {
	if err := checkProsodyJID(jid); err != nil {
		return err
	}
	if strings.ContainsAny(password, "\r\n") {
		return iotgate.Errorf(iotgate.EInvalid, "account password has a line break")
	}
	out, err := p.run(ctx, password+"\n"+password+"\n", "adduser", jid)
	switch {
	case err == nil:
		return nil
	case bytes.Contains(out, []byte("already exists")):
		return &iotgate.Error{Code: iotgate.EConflict, Detail: devices.DetailAccountExists,
			Message: fmt.Sprintf("the XMPP account %s already exists", jid)}
	default:
		return err
	}
}

// DeleteAccount runs prosodyctl deluser. Errors: as
// devices.AccountProvisioner says.
func (p *Prosody) DeleteAccount(ctx context.Context, jid string) error {
	if err := checkProsodyJID(jid); err != nil {
		return err
	}
	out, err := p.run(ctx, "", "deluser", jid)
	if err != nil && bytes.Contains(out, []byte("does not exist")) {
		return nil
	}
	return err
}

// checkProsodyJID refuses JIDs that prosodyctl would read as an option.
func checkProsodyJID(jid string) error {
	if _, _, err := split(jid); err != nil {
		return err
	}
	if strings.HasPrefix(jid, "-") {
		return iotgate.Errorf(iotgate.EInvalid, "an account name can't start with '-' on Prosody")
	}
	return nil
}

// run runs prosodyctl with args and stdin under the timeout, killing its
// process group when it runs out. Errors: unavailable, with the output's
// tail as cause.
func (p *Prosody) run(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if p.cfg.Config != "" {
		args = append([]string{"--config", p.cfg.Config}, args...)
	}
	prog := strings.Fields(p.cfg.Prosodyctl)
	if len(prog) == 0 {
		return nil, unavailable("no prosodyctl command is configured", errors.New("empty IOTGATE_PROSODYCTL"))
	}
	cmd := exec.CommandContext(ctx, prog[0], append(prog[1:], args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return out.Bytes(), nil
	}
	if ctx.Err() != nil {
		return out.Bytes(), unavailable("prosodyctl did not finish in time", errors.Join(err, ctx.Err()))
	}
	return out.Bytes(), unavailable("prosodyctl failed",
		fmt.Errorf("prosodyctl %s: %w: %s", args[len(args)-2], err, bytes.TrimSpace(out.Bytes())))
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
