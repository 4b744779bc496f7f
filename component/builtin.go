package component

import (
	"bytes"
	"context"
	"strings"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
)

// Namespaces of the built-in services.
const (
	NSDiscoInfo  = "http://jabber.org/protocol/disco#info"
	NSDiscoItems = "http://jabber.org/protocol/disco#items"
	NSPing       = "urn:xmpp:ping"
	NSVersion    = "jabber:iq:version"
	NSRSM        = "http://jabber.org/protocol/rsm" // XEP-0059 Result Set Management
)

// Directory is what service discovery needs from the device registry.
type Directory interface {
	// Registered reports whether jid (bare or full) is a registered
	// device. Errors: invalid, unavailable.
	Registered(ctx context.Context, jid string) (bool, error)
	// Devices lists devices a page at a time, by JID. Errors: invalid
	// (bad cursor).
	Devices(ctx context.Context, f iotgate.DeviceFilter) (*iotgate.DevicePage, error)
}

// DiscoConfig configures the answers to service discovery (XEP-0030) on
// the component's domain. The zero value answers disco#items with nothing
// and disco#info with the built-in features only.
type DiscoConfig struct {
	// Devices, when set, lets disco#items list devices: a registered
	// device sees itself, SeeAll see every device, anyone else nothing.
	Devices Directory
	// Namespaces, when set, adds the reading namespaces of the registered
	// schemas to disco#info's features.
	Namespaces Namespaces
	// SeeAll lists bare JIDs (ops@example.com) and domains (example.com:
	// every JID on it) that see every device in disco#items.
	SeeAll []string
	// MaxItems caps the items of one disco#items answer; more come in
	// pages (XEP-0059 <max/> and <after/>). Default 100, at most 1000.
	MaxItems int
	// MaxLookups bounds the disco#items lookups in flight (they may need
	// the database, so they run off the read loop); beyond it the asker
	// is told wait/resource-constraint. Default 16.
	MaxLookups int

	sem chan struct{} // lookups in flight; made by setDefaults, per Conn
}

func (d *DiscoConfig) setDefaults() {
	if d.MaxItems <= 0 {
		d.MaxItems = 100
	}
	d.MaxItems = min(d.MaxItems, 1000)
	if d.MaxLookups <= 0 {
		d.MaxLookups = 16
	}
	d.sem = make(chan struct{}, d.MaxLookups)
}

// seesAll reports whether the (full or bare) JID from is on the SeeAll list.
func (d *DiscoConfig) seesAll(from string) bool {
	j, err := jid.Parse(from)
	if err != nil {
		return false
	}
	bare, domain := j.Bare().String(), j.Domainpart()
	for _, s := range d.SeeAll {
		sj, err := jid.Parse(s)
		if err != nil {
			continue
		}
		if sj.Localpart() == "" && sj.Domainpart() == domain || sj.Bare().String() == bare {
			return true
		}
	}
	return false
}

// newBuiltins registers the IQs every XMPP entity must answer (ping,
// disco#info, disco#items, version) when they are addressed to the
// component's domain itself.
func (c *Conn) newBuiltins() *mux {
	m := newMux(c.cfg.Domain)
	m.handle(KindIQ, TypeGet, NSPing, "ping", c.ping)
	m.handle(KindIQ, TypeGet, NSDiscoInfo, "query", c.discoInfoQuery)
	m.handle(KindIQ, TypeGet, NSDiscoItems, "query", c.discoItemsQuery)
	m.handle(KindIQ, TypeGet, NSVersion, "query", c.version)
	return m
}

func (c *Conn) ping(_ context.Context, sess *session, st *Stanza, _ Element) {
	c.reply(sess, st.Result(nil))
}

func (c *Conn) discoInfoQuery(_ context.Context, sess *session, st *Stanza, q Element) {
	if q.AttrValue("node") != "" {
		c.reply(sess, st.ErrorReply(stanza.Cancel, stanza.ItemNotFound, "no such node"))
		return
	}
	c.reply(sess, st.Result(c.discoInfo()))
}

func (c *Conn) discoItemsQuery(ctx context.Context, sess *session, st *Stanza, q Element) {
	if q.AttrValue("node") != "" {
		c.reply(sess, st.ErrorReply(stanza.Cancel, stanza.ItemNotFound, "no such node"))
		return
	}
	c.discoItems(ctx, sess, st, q)
}

func (c *Conn) version(_ context.Context, sess *session, st *Stanza, _ Element) {
	b := []byte(`<query xmlns="` + NSVersion + `"><name>`)
	b = appendEscaped(b, c.cfg.Software)
	b = append(b, `</name><version>`...)
	b = appendEscaped(b, c.cfg.Version)
	b = append(b, `</version></query>`...)
	c.reply(sess, st.Result(b))
}

func (c *Conn) discoInfo() []byte {
	b := []byte(`<query xmlns="` + NSDiscoInfo + `"><identity category="component" type="generic" name="`)
	b = appendEscaped(b, c.cfg.Software)
	b = append(b, `"/>`...)
	features := []string{NSDiscoInfo, NSDiscoItems, NSPing, NSVersion}
	if c.cfg.Disco.Devices != nil {
		features = append(features, NSRSM)
	}
	if ns := c.cfg.Disco.Namespaces; ns != nil {
		features = append(features, ns.Namespaces()...)
	}
	for _, f := range features {
		b = append(b, `<feature var="`...)
		b = appendEscaped(b, f)
		b = append(b, `"/>`...)
	}
	return append(b, `</query>`...)
}

// discoItems answers disco#items on the domain with the devices the asker
// may see: a registered device itself, the SeeAll JIDs every device (a page
// at a time), anyone else nothing. Telling a device from a stranger may take
// the database, so the answer is computed off the read loop, at most
// MaxLookups at once.
func (c *Conn) discoItems(ctx context.Context, sess *session, st *Stanza, q Element) {
	d := &c.cfg.Disco
	if d.Devices == nil {
		c.reply(sess, st.Result([]byte(`<query xmlns="`+NSDiscoItems+`"/>`)))
		return
	}
	all := d.seesAll(st.From)
	var page rsmRequest
	if all {
		var err error
		if page, err = parseRSM(q.Raw, d.MaxItems); err != nil {
			c.reply(sess, ErrorReplyFor(st, err))
			return
		}
	}
	select {
	case d.sem <- struct{}{}:
	default:
		c.reply(sess, st.ErrorReply(stanza.Wait, stanza.ResourceConstraint, "too many discovery requests at once, try again later"))
		return
	}
	go func() {
		defer func() { <-d.sem }()
		ctx, cancel := context.WithTimeout(ctx, replyTimeout)
		defer cancel()
		var rep *Stanza
		if items, err := c.discoList(ctx, st.From, all, page); err != nil {
			rep = ErrorReplyFor(st, err)
		} else {
			rep = st.Result(items)
		}
		if err := c.Send(ctx, rep); err != nil {
			c.log.Debug("disco#items answer not sent", "to", st.From, "err", err)
		}
	}()
}

// discoList returns the disco#items <query/> for the asker.
func (c *Conn) discoList(ctx context.Context, from string, all bool, page rsmRequest) ([]byte, error) {
	b := []byte(`<query xmlns="` + NSDiscoItems + `">`)
	item := func(jid, name string) {
		b = append(b, `<item jid="`...)
		b = appendEscaped(b, jid)
		if name != "" {
			b = append(b, `" name="`...)
			b = appendEscaped(b, name)
		}
		b = append(b, `"/>`...)
	}
	if !all {
		ok, err := c.cfg.Disco.Devices.Registered(ctx, from)
		if err != nil {
			return nil, err
		}
		if ok {
			bare, _ := iotgate.BareJID(from)
			item(bare, "")
		}
		return append(b, `</query>`...), nil
	}
	p, err := c.cfg.Disco.Devices.Devices(ctx, iotgate.DeviceFilter{Limit: page.max, Cursor: page.after})
	if err != nil {
		return nil, err
	}
	for _, dev := range p.Items {
		item(dev.JID, dev.Name)
	}
	// A <set/> only while more follow: its <last/> is the opaque cursor
	// to ask for the next page with <after/>.
	if p.NextCursor != "" && len(p.Items) > 0 {
		b = append(b, `<set xmlns="`+NSRSM+`"><first>`...)
		b = appendEscaped(b, p.Items[0].JID)
		b = append(b, `</first><last>`...)
		b = appendEscaped(b, p.NextCursor)
		b = append(b, `</last></set>`...)
	}
	return append(b, `</query>`...), nil
}

// rsmRequest is the part of XEP-0059 iotgate supports: a page size and
// the cursor to continue after.
type rsmRequest struct {
	max   int
	after string
}

// parseRSM reads the <set/> of a disco#items query, if any. A missing or
// too large <max/> is capped. Errors: invalid.
func parseRSM(query []byte, maxItems int) (rsmRequest, error) {
	var q struct {
		Set *struct {
			Max   *int   `xml:"max"`
			After string `xml:"after"`
		} `xml:"http://jabber.org/protocol/rsm set"`
	}
	r := rsmRequest{max: maxItems}
	if err := newSafeDecoder(bytes.NewReader(query)).Decode(&q); err != nil {
		return r, iotgate.Errorf(iotgate.EInvalid, "bad result set request: %v", err)
	}
	if q.Set == nil {
		return r, nil
	}
	if m := q.Set.Max; m != nil {
		if *m < 1 {
			return r, iotgate.Errorf(iotgate.EInvalid, "result set <max/> must be at least 1")
		}
		r.max = min(*m, maxItems)
	}
	r.after = strings.TrimSpace(q.Set.After)
	return r, nil
}
