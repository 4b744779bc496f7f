package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/iotgate/iotgate"
)

// Delivery headers.
const (
	// HeaderSignature carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// "<t>.<body>" keyed with the secret>", as Stripe signs: receivers
	// recompute it and refuse old timestamps (replays).
	HeaderSignature = "Iotgate-Signature"
	// HeaderEventIDs is the first and last event id of the batch
	// ("17-42", or "17" for one event).
	HeaderEventIDs = "Iotgate-Event-Ids"
	// HeaderWebhookID is the webhook's id.
	HeaderWebhookID = "Iotgate-Webhook-Id"
)

// Delivery outcomes, the label of the deliveries metric.
const (
	OutcomeOK        = "ok"
	OutcomeHTTPError = "http_error" // an answer other than 2xx (a redirect included)
	OutcomeTimeout   = "timeout"
	OutcomeNetwork   = "network" // no answer: refused, reset, DNS, TLS, a refused address
)

// Outcomes lists the delivery outcomes.
var Outcomes = []string{OutcomeOK, OutcomeHTTPError, OutcomeTimeout, OutcomeNetwork}

// maxResponseRead bounds how much of a receiver's answer is read (and
// discarded), so that the connection can be reused without letting a
// receiver stream at us.
const maxResponseRead = 64 << 10

// Payload is the body of a delivery.
type Payload struct {
	Webhook string           `json:"webhook" example:"wh_q3bx7k2mzv4wd9hc"`
	Events  []*iotgate.Event `json:"events"`
}

// Sign returns the hex HMAC-SHA256 of "<t>.<body>" keyed with secret.
func Sign(secret string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(t, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// newClient returns the HTTP client of deliveries: no proxy (the dialer
// must see the receiver's own address), no redirects, the dialer's
// address check unless allowPrivate, and timeouts on every step.
func newClient(timeout time.Duration, allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = dialControl
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            dialer.DialContext,
			TLSHandshakeTimeout:    timeout,
			ResponseHeaderTimeout:  timeout,
			MaxIdleConnsPerHost:    1,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// post delivers one batch and returns its outcome and, unless ok, why.
func (d *Dispatcher) post(ctx context.Context, w *iotgate.Webhook, evs []*iotgate.Event) (outcome, why string) {
	body, err := json.Marshal(Payload{Webhook: w.ID, Events: evs})
	if err != nil {
		// Events hold valid JSON (the log stores json); a bug otherwise.
		return OutcomeNetwork, "encode batch: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return OutcomeNetwork, "build request: " + err.Error()
	}
	t := d.cfg.Now().Unix()
	ids := strconv.FormatInt(evs[0].ID, 10)
	if n := len(evs); n > 1 {
		ids += "-" + strconv.FormatInt(evs[n-1].ID, 10)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "iotgate-webhooks")
	req.Header.Set(HeaderSignature, fmt.Sprintf("t=%d,v1=%s", t, Sign(w.Secret, t, body)))
	req.Header.Set(HeaderEventIDs, ids)
	req.Header.Set(HeaderWebhookID, w.ID)
	resp, err := d.client.Do(req)
	if err != nil {
		var nerr net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &nerr) && nerr.Timeout() {
			return OutcomeTimeout, fmt.Sprintf("no answer within %s", d.cfg.Timeout)
		}
		return OutcomeNetwork, err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return OutcomeOK, ""
	}
	why = "HTTP " + resp.Status
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		why += " (redirects are not followed)"
	}
	return OutcomeHTTPError, why
}
