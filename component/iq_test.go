package component

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestSendIQReplyMatching(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	type result struct {
		st  *Stanza
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.SendIQ(ctx, &Stanza{Kind: KindIQ, Type: TypeGet, To: "thermo1@localhost/dev", Inner: []byte(`<q xmlns='urn:x'/>`)})
		res <- result{st, err}
	}()
	req := fc.read(t)
	if len(req.ID) < 20 {
		t.Errorf("IQ id %q is too short to be unguessable", req.ID)
	}
	if req.From != "iot.localhost" {
		t.Errorf("from = %q, want iot.localhost", req.From)
	}
	// Right id, wrong sender: must be ignored.
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='evil@localhost/x' to='iot.localhost'><spoof/></iq>`, req.ID))
	// Right id, bare JID of the right device but not the resource asked.
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='thermo1@localhost' to='iot.localhost'><spoof/></iq>`, req.ID))
	// Wrong id, right sender.
	fc.send(`<iq type='result' id='guess' from='thermo1@localhost/dev' to='iot.localhost'><spoof/></iq>`)
	select {
	case r := <-res:
		t.Fatalf("SendIQ returned on a spoofed reply: %v %v", r.st, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='thermo1@localhost/dev' to='iot.localhost'><ok xmlns='urn:x'/></iq>`, req.ID))
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !strings.Contains(string(r.st.Inner), "<ok") {
		t.Errorf("got reply %s, want the genuine one", r.st)
	}
	if n := c.PendingIQs(); n != 0 {
		t.Errorf("pending IQs = %d after reply, want 0", n)
	}
}

func TestPendingIQsFailWhenStreamDrops(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	const n = 5
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.SendIQ(context.Background(), &Stanza{Kind: KindIQ, Type: TypeSet, To: "d@localhost/r", Inner: []byte(`<x xmlns='urn:x'/>`)})
			errs <- err
		}()
	}
	for range n {
		fc.read(t)
	}
	start := time.Now()
	fc.Close()
	for range n {
		err := <-errs
		var e *iotgate.Error
		if !errors.As(err, &e) || e.Code != iotgate.EUnavailable || e.Detail != "xmpp_unavailable" {
			t.Errorf("err = %v, want unavailable/xmpp_unavailable", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("pending IQs failed after %s, want at once", d)
	}
	// And it reconnects by itself.
	fs.conn()
	waitFor(t, "reconnect", func() bool { return isUp(c) && c.Reconnects() == 1 })
}
