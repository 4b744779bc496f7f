package webhooks_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/webhooks"
)

// fakeResolver answers every name with its addresses.
type fakeResolver []netip.Addr

func (f fakeResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return f, nil
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	public := fakeResolver{netip.MustParseAddr("93.184.216.34")}
	tests := []struct {
		name, url string
		r         webhooks.Resolver
		detail    string // "" : accepted
	}{
		{"Public", "https://hooks.example.com/x", public, ""},
		{"PublicIP", "http://93.184.216.34:8080/x", nil, ""},
		{"Loopback", "http://127.0.0.1:8080/x", nil, iotgate.DetailWebhookURLRefused},
		{"Loopback8", "http://127.1.2.3/x", nil, iotgate.DetailWebhookURLRefused},
		{"Private10", "http://10.1.2.3/x", nil, iotgate.DetailWebhookURLRefused},
		{"Private192", "http://192.168.1.1/x", nil, iotgate.DetailWebhookURLRefused},
		{"Private172", "http://172.16.0.1/x", nil, iotgate.DetailWebhookURLRefused},
		{"Metadata", "http://169.254.169.254/latest/meta-data/", nil, iotgate.DetailWebhookURLRefused},
		{"IPv6Loopback", "http://[::1]:8080/x", nil, iotgate.DetailWebhookURLRefused},
		{"IPv6LinkLocal", "http://[fe80::1]/x", nil, iotgate.DetailWebhookURLRefused},
		{"IPv6ULA", "http://[fd00::1]/x", nil, iotgate.DetailWebhookURLRefused},
		{"IPv4Mapped", "http://[::ffff:127.0.0.1]/x", nil, iotgate.DetailWebhookURLRefused},
		{"Unspecified", "http://0.0.0.0/x", nil, iotgate.DetailWebhookURLRefused},
		{"Multicast", "http://224.0.0.1/x", nil, iotgate.DetailWebhookURLRefused},
		{"Localhost", "http://localhost:8080/x", net.DefaultResolver, iotgate.DetailWebhookURLRefused},
		{"NameToPrivate", "https://internal.example.com/x", fakeResolver{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("10.0.0.5")}, iotgate.DetailWebhookURLRefused},
		{"FTP", "ftp://93.184.216.34/x", nil, iotgate.EInvalid},
		{"NoHost", "http:///x", nil, iotgate.EInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := webhooks.CheckURL(ctx, tt.r, tt.url, false)
			var e *iotgate.Error
			switch {
			case tt.detail == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.detail == iotgate.EInvalid && iotgate.ErrorCode(err) != iotgate.EInvalid:
				t.Errorf("err %v, want invalid", err)
			case tt.detail == iotgate.DetailWebhookURLRefused && (!asError(err, &e) || e.Code != iotgate.EInvalid || e.Detail != tt.detail):
				t.Errorf("err %v, want invalid/%s", err, tt.detail)
			}
			if err := webhooks.CheckURL(ctx, tt.r, tt.url, true); (err != nil) != (tt.detail == iotgate.EInvalid) {
				t.Errorf("with AllowPrivate: %v", err)
			}
		})
	}
}

func asError(err error, e **iotgate.Error) bool {
	if x, ok := err.(*iotgate.Error); ok {
		*e = x
		return true
	}
	return false
}

func TestCreateRefusesPrivate(t *testing.T) {
	e := newEnv(t)
	svc := webhooks.NewService(e.store, e.log, webhooks.Config{})
	_, err := svc.Create(context.Background(), webhooks.CreateRequest{URL: "http://169.254.169.254/latest"})
	if e, ok := err.(*iotgate.Error); !ok || e.Detail != iotgate.DetailWebhookURLRefused {
		t.Fatalf("err %v, want webhook_url_refused", err)
	}
}

// TestDialRefusesPrivate: the address is checked again when connecting,
// so a name that resolves to a private address only later (DNS
// rebinding) is refused: here a webhook stored with a loopback URL, as if
// it had passed the check at creation.
func TestDialRefusesPrivate(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run(host, func(t *testing.T) {
			e := newEnv(t)
			var hit atomic.Int32
			r := newReceiver(t, func(int) int { hit.Add(1); return 200 })
			_, port, _ := net.SplitHostPort(r.Listener.Addr().String())
			now := time.Now()
			w := &iotgate.Webhook{ID: "wh_rebound", URL: "http://" + net.JoinHostPort(host, port) + "/hook",
				Secret: "whsec_0123456789abcdef", Devices: iotgate.Selector{}, CreatedAt: now, UpdatedAt: now}
			if err := e.store.CreateWebhook(context.Background(), w); err != nil {
				t.Fatal(err)
			}
			cfg := fastConfig()
			cfg.AllowPrivate = false
			d := e.start(t, cfg)
			e.readings("a@example.com", 1)
			eventually(t, "the refusal recorded", func() bool {
				s, _ := e.store.Webhook(context.Background(), w.ID)
				return strings.Contains(s.LastError, "refused address")
			})
			if hit.Load() != 0 || len(r.deliveries()) != 0 {
				t.Error("the receiver was reached")
			}
			if d.Deliveries()[webhooks.OutcomeNetwork] == 0 {
				t.Error("no network outcome counted")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := iotgate.Webhook{URL: "https://h.example.com/x", Secret: "whsec_0123456789abcdef"}
	tests := []struct {
		name string
		edit func(w *iotgate.Webhook)
		ok   bool
	}{
		{"OK", func(*iotgate.Webhook) {}, true},
		{"Scheme", func(w *iotgate.Webhook) { w.URL = "file:///etc/passwd" }, false},
		{"Credentials", func(w *iotgate.Webhook) { w.URL = "https://u:p@h.example.com/" }, false},
		{"LongURL", func(w *iotgate.Webhook) { w.URL = "https://h.example.com/" + strings.Repeat("a", 3000) }, false},
		{"UnknownType", func(w *iotgate.Webhook) { w.Types = []iotgate.EventType{"gap"} }, false},
		{"ShortSecret", func(w *iotgate.Webhook) { w.Secret = "short" }, false},
		{"BadLabel", func(w *iotgate.Webhook) { w.Devices = iotgate.Selector{"": "x"} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := ok
			tt.edit(&w)
			if err := w.Validate(); (err == nil) != tt.ok || err != nil && iotgate.ErrorCode(err) != iotgate.EInvalid {
				t.Errorf("Validate = %v", err)
			}
		})
	}
}
