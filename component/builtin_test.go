package component

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var itemRE = regexp.MustCompile(`<item jid="([^"]*)"`)

func items(inner string) string {
	var out []string
	for _, m := range itemRE.FindAllStringSubmatch(inner, -1) {
		out = append(out, m[1])
	}
	return strings.Join(out, ",")
}

func discoItemsIQ(id, from, rsm string) string {
	return `<iq type='get' id='` + id + `' from='` + from + `' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#items'>` + rsm + `</query></iq>`
}

func TestDiscoItems(t *testing.T) {
	dir := &fakeDirectory{jids: []string{"a@localhost", "b@localhost", "c@localhost"}}
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) {
		cfg.Disco = DiscoConfig{Devices: dir, Namespaces: fakeNamespaces{"urn:example:thermostat"},
			SeeAll: []string{"ops@admin.test", "trusted.test"}, MaxItems: 2}
	})
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	tests := []struct {
		name, in  string
		wantType  string
		wantItems string
		want      []string // substrings of the reply's payload
	}{
		{"DeviceSeesItself", discoItemsIQ("1", "b@localhost/r", ""), "result", "b@localhost", nil},
		{"DeviceIgnoresRSM", discoItemsIQ("2", "b@localhost/r", `<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set>`), "result", "b@localhost", nil},
		{"StrangerSeesNothing", discoItemsIQ("3", "x@localhost/r", ""), "result", "", []string{"disco#items"}},
		{"OtherDomainSeesNothing", discoItemsIQ("4", "a@elsewhere.test/r", ""), "result", "", nil},
		{"SeeAllJIDFirstPage", discoItemsIQ("5", "ops@admin.test/r", ""), "result", "a@localhost,b@localhost",
			[]string{`name="name of a@localhost"`, `<set xmlns="http://jabber.org/protocol/rsm"><first>a@localhost</first><last>2</last></set>`}},
		{"SeeAllJIDNextPage", discoItemsIQ("6", "ops@admin.test/r", `<set xmlns='http://jabber.org/protocol/rsm'><after>2</after></set>`), "result", "c@localhost", nil},
		{"SeeAllDomain", discoItemsIQ("7", "anyone@trusted.test/r", `<set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set>`), "result", "a@localhost", []string{"<last>1</last>"}},
		{"SeeAllMaxCapped", discoItemsIQ("8", "trusted.test", `<set xmlns='http://jabber.org/protocol/rsm'><max>500</max></set>`), "result", "a@localhost,b@localhost", nil},
		{"OtherUserOfSeeAllDomainNot", discoItemsIQ("9", "eve@admin.test/r", ""), "result", "", nil},
		{"BadMax", discoItemsIQ("10", "ops@admin.test/r", `<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set>`), "error", "", []string{`type="modify"`, "bad-request"}},
		{"BadCursor", discoItemsIQ("11", "ops@admin.test/r", `<set xmlns='http://jabber.org/protocol/rsm'><after>zz</after></set>`), "error", "", []string{"bad-request"}},
		{"Node", `<iq type='get' id='12' from='b@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='x'/></iq>`, "error", "", []string{"item-not-found"}},
		{"Info", `<iq type='get' id='13' from='x@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, "result", "",
			[]string{`<feature var="urn:example:thermostat"/>`, `<feature var="http://jabber.org/protocol/rsm"/>`, `<feature var="urn:xmpp:ping"/>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc.send(tt.in)
			got := fc.read(t)
			if got.Type != tt.wantType {
				t.Fatalf("type = %q, want %q (payload %s)", got.Type, tt.wantType, got.Inner)
			}
			if items(got.Inner) != tt.wantItems {
				t.Errorf("items = %q, want %q (payload %s)", items(got.Inner), tt.wantItems, got.Inner)
			}
			for _, w := range tt.want {
				if !strings.Contains(got.Inner, w) {
					t.Errorf("payload %q lacks %q", got.Inner, w)
				}
			}
		})
	}

	t.Run("DirectoryDown", func(t *testing.T) {
		dir.down.Store(true)
		defer dir.down.Store(false)
		fc.send(discoItemsIQ("20", "b@localhost/r", ""))
		if got := fc.read(t); got.Type != "error" || !strings.Contains(got.Inner, `type="wait"`) || !strings.Contains(got.Inner, "service-unavailable") {
			t.Errorf("reply %+v, want wait/service-unavailable", got)
		}
	})
}

// TestDiscoItemsBounded checks that lookups beyond MaxLookups are refused
// at once with wait/resource-constraint, and the read loop keeps going
// while lookups wait.
func TestDiscoItemsBounded(t *testing.T) {
	dir := &fakeDirectory{jids: []string{"a@localhost"}, block: make(chan struct{})}
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) { cfg.Disco = DiscoConfig{Devices: dir, MaxLookups: 2} })
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	for i := range 3 {
		fc.send(discoItemsIQ("q"+strconv.Itoa(i), "a@localhost/r", ""))
	}
	fc.send(`<iq type='get' id='ping' from='a@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if got := fc.read(t); got.ID != "q2" || !strings.Contains(got.Inner, `type="wait"`) || !strings.Contains(got.Inner, "resource-constraint") {
		t.Fatalf("third lookup: %+v, want wait/resource-constraint", got)
	}
	if got := fc.read(t); got.ID != "ping" || got.Type != "result" {
		t.Fatalf("got %+v, want the ping answered while lookups wait", got)
	}
	close(dir.block)
	var ids []string
	for range 2 {
		got := fc.read(t)
		if items(got.Inner) != "a@localhost" {
			t.Errorf("reply %+v, want the device itself", got)
		}
		ids = append(ids, got.ID)
	}
	slices.Sort(ids)
	if strings.Join(ids, ",") != "q0,q1" {
		t.Errorf("answered %v, want q0, q1", ids)
	}
}

func TestBuiltinIQs(t *testing.T) {
	fs := newFakeServer(t, "s3cret")
	c := startConn(t, fs.addr(), "s3cret", nil)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	tests := []struct {
		name     string
		in       string
		wantType string
		want     string // substring of the reply's payload
	}{
		{"Ping", `<iq type='get' id='1' from='a@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "result", ""},
		{"DiscoInfo", `<iq type='get' id='2' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, "result", `<feature var="urn:xmpp:ping"/>`},
		{"DiscoInfoIdentity", `<iq type='get' id='3' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, "result", `<identity category="component" type="generic" name="iotgate"/>`},
		{"DiscoInfoNode", `<iq type='get' id='4' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`, "error", "item-not-found"},
		{"DiscoItems", `<iq type='get' id='5' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`, "result", `disco#items`},
		{"Version", `<iq type='get' id='6' from='a@localhost/r' to='iot.localhost'><query xmlns='jabber:iq:version'/></iq>`, "result", `<name>iotgate</name><version>test</version>`},
		{"UnknownGet", `<iq type='get' id='7' from='a@localhost/r' to='iot.localhost'><query xmlns='urn:example:nope'/></iq>`, "error", "service-unavailable"},
		{"UnknownSet", `<iq type='set' id='8' from='a@localhost/r' to='iot.localhost'><x xmlns='urn:example:nope'/></iq>`, "error", "service-unavailable"},
		{"BadType", `<iq type='frob' id='9' from='a@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "error", "bad-request"},
		{"PingToOtherJID", `<iq type='get' id='10' from='a@localhost/r' to='x@iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "error", "service-unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc.send(tt.in)
			got := fc.read(t)
			if got.Type != tt.wantType {
				t.Fatalf("type = %q, want %q (payload %s)", got.Type, tt.wantType, got.Inner)
			}
			if !strings.Contains(got.Inner, tt.want) {
				t.Errorf("payload %q does not contain %q", got.Inner, tt.want)
			}
			if got.To != "a@localhost/r" {
				t.Errorf("to = %q, want the requester", got.To)
			}
			if !strings.HasSuffix(got.From, "iot.localhost") {
				t.Errorf("from = %q, want on iot.localhost", got.From)
			}
		})
	}
}
