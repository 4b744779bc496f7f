package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/iotgate/iotgate/internal/servers"
)

// modRest is the peer row's load (#17): the same command the REST and raw
// loads send, as an IQ POSTed to Prosody's community mod_rest, which sends
// it to the same simulated devices and answers with their reply. It is the
// nearest thing to iotgate that Prosody offers: an HTTP request in, an IQ
// out, the answer back, and nothing kept.
type modRest struct {
	url, user, password string
	api                 *http.Client
	bodies              [][]byte // one IQ per device, by device index
}

// modRestMaxBody bounds the answer read: the device's <state> in an <iq>.
const modRestMaxBody = 64 << 10

// newModRest returns the mod_rest load for the devices with full JIDs
// full, or nil if xs has no mod_rest (ejabberd: the row is Prosody's).
func newModRest(xs servers.XMPPServer, api *http.Client, full []string) *modRest {
	p, ok := xs.(*servers.Prosody)
	if !ok || p.ModRestURL() == "" {
		return nil
	}
	user, _, password := p.ModRestUser()
	m := &modRest{url: p.ModRestURL(), user: user, password: password, api: api}
	for _, to := range full {
		m.bodies = append(m.bodies, modRestIQ(to))
	}
	return m
}

// modRestIQ returns the IQ that carries the command to the device to.
func modRestIQ(to string) []byte {
	var b bytes.Buffer
	b.WriteString(`<iq type="set" to="`)
	_ = xml.EscapeText(&b, []byte(to)) // a bytes.Buffer's writes don't fail
	b.WriteString(`">` + commandPayload + `</iq>`)
	return b.Bytes()
}

// op sends the i-th command through mod_rest (to device i % devices, as
// the REST and raw loads do) and checks that the device's answer is a
// result.
func (m *modRest) op(ctx context.Context, i int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.url, bytes.NewReader(m.bodies[i%len(m.bodies)]))
	if err != nil {
		return err
	}
	req.SetBasicAuth(m.user, m.password)
	req.Header.Set("Content-Type", "application/xmpp+xml")
	req.Header.Set("Accept", "application/xmpp+xml")
	// mod_rest's own IQ timeout (120 s by default) down to the bench's.
	req.Header.Set("Prosody-Rest-Timeout", strconv.Itoa(int(opTimeout.Seconds())))
	resp, err := m.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, modRestMaxBody))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mod_rest: status %d: %.200s", resp.StatusCode, b)
	}
	return modRestResult(b)
}

// modRestResult checks that b, mod_rest's answer, is an IQ result: on
// Prosody 0.12 a stanza error from the device also comes in a 200.
func modRestResult(b []byte) error {
	top, _, ok := bytes.Cut(b, []byte(">"))
	if !ok || !bytes.HasPrefix(top, []byte("<iq ")) {
		return fmt.Errorf("mod_rest: answer is not an IQ: %.200s", b)
	}
	if !bytes.Contains(top, []byte(`type='result'`)) && !bytes.Contains(top, []byte(`type="result"`)) {
		return fmt.Errorf("mod_rest: answer %.200s", b)
	}
	return nil
}
