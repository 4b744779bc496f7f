package component

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestSendCommand(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	const to = "thermo1@localhost/kitchen"
	tests := []struct {
		name      string
		typ       string
		payload   string
		wantSent  string // the IQ's payload on the wire
		answer    func(id string) []string
		wantReply iotgate.CommandReply
	}{
		{"Result", "set", `<set xmlns="urn:example:t"><target>21.5</target></set>`, `<set xmlns="urn:example:t"><target>21.5</target></set>`,
			func(id string) []string {
				return []string{fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='iot.localhost'><state xmlns='urn:example:t'><mode>heat</mode></state></iq>`, id, to)}
			},
			iotgate.CommandReply{Type: "result", Payload: []byte(`<state xmlns='urn:example:t'><mode>heat</mode></state>`), Namespace: "urn:example:t"}},
		{"EmptyResult", "get", `<get xmlns="urn:example:t"/>`, `<get xmlns="urn:example:t"/>`,
			func(id string) []string {
				return []string{fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='iot.localhost'/>`, id, to)}
			},
			iotgate.CommandReply{Type: "result"}},
		{"DeclarationStripped", "set", "<?xml version='1.0'?>\n<!-- c --><set xmlns='urn:example:t'/>\n", `<set xmlns="urn:example:t"/>`,
			func(id string) []string {
				return []string{fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='iot.localhost'/>`, id, to)}
			},
			iotgate.CommandReply{Type: "result"}},
		// What the API refuses, should a stored payload still carry it:
		// re-serialized, nothing of it reaches the stream.
		{"CommentsAndPIsDropped", "set", `<set xmlns="urn:example:t"><!--x--><?pi y?><target>21.5<!--z--></target></set>`, `<set xmlns="urn:example:t"><target>21.5</target></set>`,
			func(id string) []string {
				return []string{fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='iot.localhost'/>`, id, to)}
			},
			iotgate.CommandReply{Type: "result"}},
		{"CDATAEscaped", "set", `<t:set xmlns:t="urn:example:t"><t:target a="&quot;"><![CDATA[<x>]]]]><![CDATA[>]]></t:target></t:set>`,
			`<set xmlns="urn:example:t"><target a="&quot;">&lt;x&gt;]]&gt;</target></set>`,
			func(id string) []string {
				return []string{fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='iot.localhost'/>`, id, to)}
			},
			iotgate.CommandReply{Type: "result"}},
		{"Error", "set", `<set xmlns="urn:example:t"/>`, `<set xmlns="urn:example:t"/>`,
			func(id string) []string {
				return []string{fmt.Sprintf(`<iq type='error' id='%s' from='%s' to='iot.localhost'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>target out of range</text></error></iq>`, id, to)}
			},
			iotgate.CommandReply{Type: "error", Error: &iotgate.XMPPError{Type: "modify", Condition: "not-acceptable", Text: "target out of range"}}},
		{"WrongSenderIgnored", "set", `<set xmlns="urn:example:t"/>`, `<set xmlns="urn:example:t"/>`,
			func(id string) []string {
				return []string{
					// Right id from another device, from the bare JID, from
					// the server: all ignored.
					fmt.Sprintf(`<iq type='result' id='%s' from='thermo2@localhost/kitchen' to='iot.localhost'><spoof xmlns='urn:x'/></iq>`, id),
					fmt.Sprintf(`<iq type='result' id='%s' from='thermo1@localhost' to='iot.localhost'><spoof xmlns='urn:x'/></iq>`, id),
					fmt.Sprintf(`<iq type='error' id='%s' from='localhost' to='iot.localhost'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, id),
					fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='iot.localhost'><ok xmlns='urn:x'/></iq>`, id, to),
				}
			},
			iotgate.CommandReply{Type: "result", Payload: []byte(`<ok xmlns='urn:x'/>`), Namespace: "urn:x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type res struct {
				rep iotgate.CommandReply
				err error
			}
			done := make(chan res, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				rep, err := c.SendCommand(ctx, to, tt.typ, "", []byte(tt.payload))
				done <- res{rep, err}
			}()
			req := fc.read(t)
			if req.Type != tt.typ || req.To != to || req.From != "iot.localhost" || req.Inner != tt.wantSent {
				t.Fatalf("sent %+v, want %s to %s with %s", req, tt.typ, to, tt.wantSent)
			}
			for _, a := range tt.answer(req.ID) {
				fc.send(a)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.rep.Type != tt.wantReply.Type || string(r.rep.Payload) != string(tt.wantReply.Payload) || r.rep.Namespace != tt.wantReply.Namespace ||
				fmt.Sprint(r.rep.Error) != fmt.Sprint(tt.wantReply.Error) {
				t.Errorf("reply = %+v (%s), want %+v (%s)", r.rep, r.rep.Payload, tt.wantReply, tt.wantReply.Payload)
			}
		})
	}

	t.Run("NotOneElement", func(t *testing.T) {
		for _, p := range []string{"", "text", "<a/><b/>", "<a>", "<!DOCTYPE a><a/>"} {
			_, err := c.SendCommand(context.Background(), to, "set", "", []byte(p))
			if iotgate.ErrorCode(err) != iotgate.EInvalid {
				t.Errorf("payload %q: err = %v, want invalid", p, err)
			}
		}
		_, err := c.SendCommand(context.Background(), to, "result", "", []byte("<a/>"))
		if iotgate.ErrorCode(err) != iotgate.EInvalid || !strings.Contains(err.Error(), "get or set") {
			t.Errorf("type result: err = %v, want invalid", err)
		}
	})
}

// strayAnswers records what ForwardStrayAnswers hands on.
type strayAnswers struct {
	mu   sync.Mutex
	from map[string]int
	reps []iotgate.CommandReply
}

func (s *strayAnswers) ForeignAnswer(from, _ string, rep iotgate.CommandReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.from[from]++
	s.reps = append(s.reps, rep)
}

func (s *strayAnswers) count(from string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.from[from]
}

// TestStrayAnswers: replies that match no IQ of this connection go on to
// the other instances' commands, each device held to its rate; replies
// that match are not handed on.
func TestStrayAnswers(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	got := &strayAnswers{from: map[string]int{}}
	c.ForwardStrayAnswers(got)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	const flooder, other = "flood@localhost/r", "other@localhost/r"
	for i := range int(strayBurst) + 100 {
		fc.send(fmt.Sprintf(`<iq type='result' id='f%d' from='%s' to='iot.localhost'/>`, i, flooder))
	}
	fc.send(fmt.Sprintf(`<iq type='error' id='o1' from='%s' to='iot.localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, other))
	waitFor(t, "the other device's answer", func() bool { return got.count(other) == 1 })
	if n := got.count(flooder); n < int(strayBurst) || n > int(strayBurst)+20 {
		t.Errorf("%d of the flooder's %d stray replies handed on, want about its burst %d", n, int(strayBurst)+100, int(strayBurst))
	}
	got.mu.Lock()
	last := got.reps[len(got.reps)-1]
	got.mu.Unlock()
	if last.Type != "error" || last.Error == nil || last.Error.Condition != "item-not-found" {
		t.Errorf("error reply handed on as %+v", last)
	}

	// A reply to this connection's own IQ is not a stray one.
	done := make(chan error, 1)
	go func() {
		_, err := c.SendCommand(context.Background(), other, "get", "OWNIDOWNIDOWNIDOWNIDOWNIDX", []byte(`<get xmlns="urn:example:t"/>`))
		done <- err
	}()
	st := fc.read(t)
	if st.ID != "OWNIDOWNIDOWNIDOWNIDOWNIDX" {
		t.Fatalf("IQ sent with id %q, want the caller's", st.ID)
	}
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='iot.localhost'/>`, st.ID, other))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := got.count(other); n != 1 {
		t.Errorf("the answer to the connection's own IQ was handed on too (%d)", n)
	}
}
