// Package sim simulates IoT devices for demos and tests: each one is a real
// XMPP client (package device) that logs in, subscribes to iotgate's
// presence, sends readings of one of the example schemas at a set rate (by
// message or IQ) and answers commands. Some can be told to misbehave:
// answer late, never answer, stay offline, or send invalid readings.
// cmd/devicesim and the make dev runner drive it.
//
// It imports internal/device and schemas/examples only.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate/internal/device"
)

// Behaviour says how a simulated device misbehaves; the zero value is a
// well-behaved device.
type Behaviour struct {
	// Slow devices answer commands after Config.SlowDelay.
	Slow bool
	// Silent devices never answer commands (iotgate times them out).
	Silent bool
	// Offline devices don't log in; with Config.OfflineAfter, they log
	// in, behave, and log out for good after that long.
	Offline bool
}

// String names the behaviour for logs: "normal", "slow", "silent+offline"...
func (b Behaviour) String() string {
	var parts []string
	if b.Slow {
		parts = append(parts, "slow")
	}
	if b.Silent {
		parts = append(parts, "silent")
	}
	if b.Offline {
		parts = append(parts, "offline")
	}
	if len(parts) == 0 {
		return "normal"
	}
	return strings.Join(parts, "+")
}

// Device is one simulated device.
type Device struct {
	// User is the local part of its account; its JID is User@Config.Domain.
	User     string
	Password string
	Behaviour
}

// Config configures a simulation.
type Config struct {
	// Addr is the XMPP server's c2s host:port.
	Addr string
	// Domain is the XMPP domain of the device accounts.
	Domain string
	// Component is iotgate's domain, where readings go.
	Component string
	// Kind is the model of every device, one of Kinds.
	Kind    string
	Devices []Device
	// Rate is readings per second per device; 0 sends none.
	Rate float64
	// Via is "iq" (acknowledged readings) or "message" (fire and forget).
	Via string
	// Invalid is the fraction (0 to 1) of readings that break the schema,
	// spread evenly: 0.1 is every tenth.
	Invalid float64
	// Count bounds each device's readings; 0 means no bound.
	Count int
	// SlowDelay is how late slow devices answer.
	SlowDelay time.Duration
	// OfflineAfter, if positive, is how long offline devices stay online.
	OfflineAfter time.Duration
	// NoPresence skips the subscription and available presence: iotgate
	// then sees the devices offline and can't send them commands.
	NoPresence bool
	// Priority is the presence priority of the devices.
	Priority int
	// Verify makes the devices verify the server's TLS certificate.
	Verify bool
	// Seed makes the devices' noise reproducible (each device adds its
	// index).
	Seed uint64
	// Log receives what happens; nil discards it. Readings are logged
	// at debug level, commands and logins at info, problems at warn.
	Log *slog.Logger
}

// Stats counts what a simulation did. Its fields are read and written
// atomically; Snapshot returns a copy.
type Stats struct {
	// LoggedIn counts successful logins (reconnections included).
	LoggedIn atomic.Int64
	// LoginFailures counts failed logins.
	LoginFailures atomic.Int64
	// Sent counts readings sent; InvalidSent those of them meant to be
	// invalid.
	Sent, InvalidSent atomic.Int64
	// Acked counts IQ readings iotgate acknowledged.
	Acked atomic.Int64
	// Refused counts readings iotgate refused: IQ errors and error
	// messages.
	Refused atomic.Int64
	// Failed counts IQ readings with no answer in time, or that could
	// not be sent.
	Failed atomic.Int64
	// Unexpected counts answers that contradict the reading's intended
	// validity: a valid reading refused, an invalid one acknowledged.
	Unexpected atomic.Int64
	// Commands counts commands received; Answered those answered with a
	// result, Rejected those answered with an error (unknown or bad
	// command), Ignored those left unanswered (silent devices).
	Commands, Answered, Rejected, Ignored atomic.Int64
	// SubscriptionsRefused counts unsubscribed answers from iotgate (the
	// device is not registered with it).
	SubscriptionsRefused atomic.Int64
}

// Summary is a plain copy of Stats.
type Summary struct {
	LoggedIn, LoginFailures                   int64
	Sent, InvalidSent, Acked, Refused, Failed int64
	Unexpected                                int64
	Commands, Answered, Rejected, Ignored     int64
	SubscriptionsRefused                      int64
}

// Snapshot returns the counts so far.
func (s *Stats) Snapshot() Summary {
	return Summary{
		LoggedIn: s.LoggedIn.Load(), LoginFailures: s.LoginFailures.Load(),
		Sent: s.Sent.Load(), InvalidSent: s.InvalidSent.Load(),
		Acked: s.Acked.Load(), Refused: s.Refused.Load(), Failed: s.Failed.Load(),
		Unexpected: s.Unexpected.Load(),
		Commands:   s.Commands.Load(), Answered: s.Answered.Load(), Rejected: s.Rejected.Load(), Ignored: s.Ignored.Load(),
		SubscriptionsRefused: s.SubscriptionsRefused.Load(),
	}
}

// String is the summary in one paragraph.
func (s Summary) String() string {
	return fmt.Sprintf("logins %d (%d failed); readings sent %d (%d invalid on purpose): acknowledged %d, refused %d, failed %d, unexpected answers %d; "+
		"commands %d: answered %d, refused %d, ignored %d; subscriptions refused %d",
		s.LoggedIn, s.LoginFailures, s.Sent, s.InvalidSent, s.Acked, s.Refused, s.Failed, s.Unexpected,
		s.Commands, s.Answered, s.Rejected, s.Ignored, s.SubscriptionsRefused)
}

// Limits of a simulation, so that a typo doesn't flood a server.
const (
	MaxDevices = 1000
	MaxRate    = 50 // readings per second per device
	// iqTimeout bounds the wait for iotgate's answer to an IQ reading.
	iqTimeout = 10 * time.Second
	// Reconnection backoff after a lost or failed login.
	minBackoff = time.Second
	maxBackoff = 15 * time.Second
)

// Check reports the first problem with cfg.
func (cfg Config) Check() error {
	switch {
	case cfg.Addr == "" || cfg.Domain == "" || cfg.Component == "":
		return errors.New("the server address, the domain and the component are required")
	case len(cfg.Devices) == 0 || len(cfg.Devices) > MaxDevices:
		return fmt.Errorf("%d devices: want 1 to %d", len(cfg.Devices), MaxDevices)
	case cfg.Rate < 0 || cfg.Rate > MaxRate || math.IsNaN(cfg.Rate):
		return fmt.Errorf("rate %v: want 0 to %d readings per second", cfg.Rate, MaxRate)
	case cfg.Via != "iq" && cfg.Via != "message":
		return fmt.Errorf("via %q: want iq or message", cfg.Via)
	case cfg.Invalid < 0 || cfg.Invalid > 1 || math.IsNaN(cfg.Invalid):
		return fmt.Errorf("invalid fraction %v: want 0 to 1", cfg.Invalid)
	case cfg.Count < 0:
		return fmt.Errorf("count %d: want 0 or more", cfg.Count)
	case cfg.Priority < -128 || cfg.Priority > 127:
		return fmt.Errorf("priority %d: want -128 to 127", cfg.Priority)
	}
	if _, err := Schema(cfg.Kind); err != nil {
		return err
	}
	return nil
}

// Run runs the devices until ctx ends, or until every device has sent
// Count readings (and waited a second for late refusals), counting what
// they do in stats. Devices that can't log in, or lose their session,
// log in again with backoff. It returns an error only for a bad cfg.
func Run(ctx context.Context, cfg Config, stats *Stats) error {
	if err := cfg.Check(); err != nil {
		return err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	for i, d := range cfg.Devices {
		model, err := NewModel(cfg.Kind, d.User, cfg.Seed+uint64(i))
		if err != nil {
			return err
		}
		sd := &simDevice{cfg: &cfg, dev: d, model: model, stats: stats,
			jid: d.User + "@" + cfg.Domain, log: cfg.Log.With("device", d.User+"@"+cfg.Domain)}
		// Spread the devices' readings over one period.
		offset := time.Duration(0)
		if cfg.Rate > 0 {
			offset = time.Duration(float64(i) / float64(len(cfg.Devices)) / cfg.Rate * float64(time.Second))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sd.run(ctx, offset)
		}()
	}
	wg.Wait()
	return nil
}

// simDevice is one device of a running simulation.
type simDevice struct {
	cfg   *Config
	dev   Device
	model Model
	stats *Stats
	jid   string
	log   *slog.Logger
	// sent counts readings across reconnections.
	sent int
}

// run logs the device in, and in again after a lost session, until ctx
// ends or it has sent its readings.
func (d *simDevice) run(ctx context.Context, offset time.Duration) {
	if d.dev.Offline && d.cfg.OfflineAfter <= 0 {
		d.log.Info("offline: not logging in")
		return
	}
	if d.dev.Offline {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.cfg.OfflineAfter)
		defer cancel()
	}
	backoff := minBackoff
	for ctx.Err() == nil {
		done, err := d.session(ctx, offset)
		if done || ctx.Err() != nil {
			break
		}
		d.log.Warn("session ended; logging in again", "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			break
		}
		backoff = min(2*backoff, maxBackoff)
		offset = 0
	}
	if d.dev.Offline {
		d.log.Info("offline from now on")
	}
}

// session runs one login. It reports whether the device is done (all its
// readings sent) and why the session ended otherwise.
func (d *simDevice) session(ctx context.Context, offset time.Duration) (bool, error) {
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := device.Dial(dialCtx, device.Options{
		Addr: d.cfg.Addr, JID: d.jid, Password: d.dev.Password, Verify: d.cfg.Verify,
		IQHandler: func(iq device.IQ) device.Reply { return d.command(ctx, iq) },
	})
	cancel()
	if err != nil {
		d.stats.LoginFailures.Add(1)
		return false, err
	}
	defer c.Close()
	d.stats.LoggedIn.Add(1)
	if !d.cfg.NoPresence {
		if err := c.Subscribe(ctx, d.cfg.Component); err != nil {
			return false, err
		}
		if err := c.SendAvailable(ctx, d.cfg.Priority, "simulated "+d.cfg.Kind); err != nil {
			return false, err
		}
	}
	d.log.Info("logged in", "jid", c.JID(), "behaviour", d.dev.Behaviour.String())

	go d.watch(ctx, c)
	if d.cfg.Rate == 0 {
		select {
		case <-ctx.Done():
			return true, nil
		case <-c.Done():
			return false, c.Err()
		}
	}
	if !sleep(ctx, offset) {
		return true, nil
	}
	period := time.Duration(float64(time.Second) / d.cfg.Rate)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		if d.cfg.Count > 0 && d.sent >= d.cfg.Count {
			// Done, after a moment for refusals of message readings.
			sleep(ctx, time.Second)
			return true, nil
		}
		if err := d.send(ctx, c); err != nil {
			return false, err
		}
		select {
		case <-ctx.Done():
			return true, nil
		case <-c.Done():
			return false, c.Err()
		case <-tick.C:
		}
	}
}

// send sends one reading. It returns an error only when the session is
// lost.
func (d *simDevice) send(ctx context.Context, c *device.Client) error {
	d.sent++
	invalid := d.invalidAt(d.sent)
	payload := d.model.Reading(invalid)
	d.stats.Sent.Add(1)
	if invalid {
		d.stats.InvalidSent.Add(1)
	}
	if d.cfg.Via == "message" {
		id := fmt.Sprintf("r%d", d.sent)
		if invalid {
			id += "-invalid"
		}
		if err := c.SendMessage(ctx, d.cfg.Component, id, payload); err != nil {
			d.stats.Failed.Add(1)
			return err
		}
		d.log.Debug("reading sent", "id", id, "invalid", invalid)
		return nil
	}
	ictx, cancel := context.WithTimeout(ctx, iqTimeout)
	rep, err := c.SendIQ(ictx, "set", d.cfg.Component, payload)
	cancel()
	switch {
	case err != nil:
		d.stats.Failed.Add(1)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, device.ErrClosed) {
			return err
		}
		d.log.Warn("reading not answered", "seq", d.sent, "err", err)
	case rep.Type == "result":
		d.stats.Acked.Add(1)
		if invalid {
			d.stats.Unexpected.Add(1)
			d.log.Warn("invalid reading acknowledged", "seq", d.sent, "payload", payload)
		}
		d.log.Debug("reading acknowledged", "seq", d.sent)
	default:
		d.stats.Refused.Add(1)
		if !invalid {
			d.stats.Unexpected.Add(1)
		}
		lvl := slog.LevelInfo
		if !invalid {
			lvl = slog.LevelWarn
		}
		d.log.Log(ctx, lvl, "reading refused", "seq", d.sent, "invalid", invalid,
			"error", string(rep.ErrorType)+"/"+string(rep.Condition), "text", rep.Text)
	}
	return nil
}

// invalidAt reports whether reading n (from 1) is to be invalid: the
// fraction Invalid of readings, spread evenly.
func (d *simDevice) invalidAt(n int) bool {
	f := d.cfg.Invalid
	return f > 0 && math.Floor(float64(n)*f) > math.Floor(float64(n-1)*f)
}

// watch reports what iotgate sends the device: refusals of message
// readings and answers to the subscription.
func (d *simDevice) watch(ctx context.Context, c *device.Client) {
	component := bare(d.cfg.Component)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Done():
			return
		case m := <-c.Messages():
			if m.Type != "error" || bare(m.From) != component {
				continue
			}
			d.stats.Refused.Add(1)
			invalid := strings.HasSuffix(m.ID, "-invalid")
			if !invalid {
				d.stats.Unexpected.Add(1)
			}
			var cond, text string
			if m.Error != nil {
				cond = string(m.Error.Type) + "/" + string(m.Error.Condition)
				text = errorText(m.Error)
			}
			lvl := slog.LevelInfo
			if !invalid {
				lvl = slog.LevelWarn
			}
			d.log.Log(ctx, lvl, "reading refused", "id", m.ID, "invalid", invalid, "error", cond, "text", text)
		case p := <-c.Presences():
			if bare(p.From) != component {
				continue
			}
			switch p.Type {
			case "subscribed":
				d.log.Debug("iotgate accepted the subscription")
			case "subscribe":
				d.log.Debug("iotgate asked for a subscription", "approved", p.Approved)
			case "unsubscribed":
				d.stats.SubscriptionsRefused.Add(1)
				d.log.Warn("iotgate refused the subscription: is the device registered with it?")
			}
		}
	}
}

// bare returns the bare JID of j, lower-cased for comparisons.
func bare(j string) string {
	j, _, _ = strings.Cut(j, "/")
	return strings.ToLower(j)
}

// command answers a command according to the device's behaviour.
func (d *simDevice) command(ctx context.Context, iq device.IQ) device.Reply {
	d.stats.Commands.Add(1)
	if d.dev.Silent {
		d.stats.Ignored.Add(1)
		d.log.Info("command ignored (silent device)", "from", iq.From, "type", iq.Type, "payload", iq.Payload)
		return device.Reply{Type: device.NoReply}
	}
	if d.dev.Slow && !sleep(ctx, d.cfg.SlowDelay) {
		d.stats.Ignored.Add(1)
		return device.Reply{Type: device.NoReply}
	}
	rep := d.model.Command(iq)
	if rep.Type == "error" {
		d.stats.Rejected.Add(1)
		d.log.Info("command refused", "from", iq.From, "type", iq.Type, "payload", iq.Payload,
			"error", string(rep.ErrorType)+"/"+string(rep.Condition), "text", rep.Text)
		return rep
	}
	d.stats.Answered.Add(1)
	d.log.Info("command answered", "from", iq.From, "type", iq.Type, "payload", iq.Payload, "answer", rep.Payload)
	return rep
}

// sleep waits for d or ctx, and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errorText returns the error's text in any language, preferring none.
func errorText(e *stanza.Error) string {
	if t, ok := e.Text[""]; ok {
		return t
	}
	for _, t := range e.Text {
		return t
	}
	return ""
}
