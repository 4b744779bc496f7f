package devices

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

// ringT0 is the time the ring tests' readings start at.
var ringT0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func sameJSON(b []byte) ([]byte, bool) { return b, true }

// testEncode stands for api.AppendReading: any deterministic encoding.
func testEncode(b []byte, r *iotgate.Reading) []byte {
	j, _ := json.Marshal(r)
	return append(b, j...)
}

func newTestRing(maxBytes, maxDevices, perDevice int, retention time.Duration) *readingRing {
	return newReadingRing(maxBytes, maxDevices, perDevice, retention, sameJSON, testEncode)
}

// storeModel is what the store holds of one device, and answers pages
// as postgres.DB.Readings does (without a byte budget cut).
type storeModel struct {
	jid   string
	devID int64
	rows  []*iotgate.Reading // ascending
}

func (m *storeModel) add(r *iotgate.Reading) {
	i, _ := slices.BinarySearchFunc(m.rows, markOf(r), func(e *iotgate.Reading, k mark) int {
		switch {
		case markOf(e).after(k):
			return 1
		case k.after(markOf(e)):
			return -1
		}
		return 0
	})
	m.rows = slices.Insert(m.rows, i, r)
}

func (m *storeModel) page(t *testing.T, f iotgate.ReadingFilter) *iotgate.ReadingPage {
	t.Helper()
	var c iotgate.TimeCursor
	if f.Cursor != "" {
		var err error
		if c, err = iotgate.ParseTimeCursor(f.Cursor); err != nil {
			t.Fatal(err)
		}
	}
	var sel []*iotgate.Reading
	for _, r := range m.rows {
		switch {
		case f.Since != nil && r.ReceivedAt.Before(*f.Since), f.Until != nil && !r.ReceivedAt.Before(*f.Until):
		case f.Cursor != "" && f.Desc && !(mark{c.At, c.ID}).after(markOf(r)):
		case f.Cursor != "" && !f.Desc && !markOf(r).after(mark{c.At, c.ID}):
		default:
			sel = append(sel, r)
		}
	}
	if f.Desc {
		slices.Reverse(sel)
	}
	p := &iotgate.ReadingPage{Items: sel[:min(len(sel), f.Limit)]}
	if len(sel) > f.Limit {
		last := p.Items[f.Limit-1]
		p.NextCursor = iotgate.TimeCursor{At: last.ReceivedAt, ID: last.ID}.String()
	}
	return p
}

func ids(rs []*iotgate.Reading) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// newestFirst returns the newest n rows of m, newest first, and whether
// they are all of them: the seed a fill gets.
func (m *storeModel) newestFirst(n int) ([]*iotgate.Reading, bool) {
	out := slices.Clone(m.rows[max(0, len(m.rows)-n):])
	slices.Reverse(out)
	return out, n >= len(m.rows)
}

// TestRingPagesMatchStore holds every page the ring answers to the
// store's answer, over random readings (with equal received_at, and
// commits out of time order), limits, cursors, orders and since/until,
// and checks that it answers the recent pages.
func TestRingPagesMatchStore(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 17))
			m := &storeModel{jid: "d@example.com", devID: 7}
			nextID := int64(1)
			newReading := func(at time.Time) *iotgate.Reading {
				r := &iotgate.Reading{ID: nextID, DeviceID: m.devID, DeviceJID: m.jid, ReceivedAt: at,
					XML: "<r>" + strconv.Itoa(int(nextID)) + "</r>", Data: json.RawMessage(`{"n": ` + strconv.Itoa(int(nextID)) + `}`)}
				nextID++
				return r
			}
			// ids are handed out in commit order, times mostly rise, a
			// few repeat or step back.
			at := ringT0
			stepAt := func() time.Time {
				switch rng.IntN(10) {
				case 0: // same time
				case 1:
					at = at.Add(-time.Duration(rng.IntN(3)) * time.Second)
				default:
					at = at.Add(time.Duration(rng.IntN(3)+1) * time.Second)
				}
				return at
			}
			for range rng.IntN(150) {
				m.add(newReading(stepAt()))
			}
			per := 1 + rng.IntN(100)
			g := newTestRing(1<<30, 10, per, 0)
			tok, ok := g.startFill(m.jid, m.devID)
			if !ok {
				t.Fatal("startFill refused on an empty ring")
			}
			seedRows, whole := m.newestFirst(per)
			g.fill(tok, seedRows, whole)
			answered, recent := 0, 0
			for step := range 300 {
				if rng.IntN(4) == 0 {
					var batch []*iotgate.Reading
					for range 1 + rng.IntN(3) {
						r := newReading(stepAt())
						m.add(r)
						batch = append(batch, r)
					}
					g.committed(batch, g.committing(batch))
				}
				f := iotgate.ReadingFilter{Limit: 1 + rng.IntN(per+10), Desc: rng.IntN(3) > 0}
				if rng.IntN(3) == 0 && len(m.rows) > 0 {
					r := m.rows[rng.IntN(len(m.rows))]
					f.Cursor = iotgate.TimeCursor{At: r.ReceivedAt, ID: r.ID}.String()
				}
				if rng.IntN(4) == 0 {
					s := ringT0.Add(time.Duration(rng.IntN(400)-20) * time.Second)
					f.Since = &s
				}
				if rng.IntN(4) == 0 {
					u := ringT0.Add(time.Duration(rng.IntN(400)) * time.Second)
					f.Until = &u
				}
				got, ok := g.page(m.jid, m.devID, f, ringT0)
				isRecent := f.Desc && f.Cursor == "" && f.Since == nil && f.Until == nil && f.Limit < per
				if isRecent {
					recent++
				}
				if !ok {
					if isRecent {
						t.Fatalf("step %d: the ring did not answer a recent page %+v", step, f)
					}
					continue
				}
				answered++
				want := m.page(t, f)
				if !slices.Equal(ids(got.Items), ids(want.Items)) || got.NextCursor != want.NextCursor {
					t.Fatalf("step %d: filter %+v:\n got %v next %q\nwant %v next %q", step, f, ids(got.Items), got.NextCursor, ids(want.Items), want.NextCursor)
				}
				for i, r := range got.Items {
					if enc := testEncode(nil, r); string(got.Encoded[i]) != string(enc) {
						t.Fatalf("step %d: item %d encoded %s, want %s", step, i, got.Encoded[i], enc)
					}
				}
			}
			if recent > 0 && answered < recent {
				t.Fatalf("answered %d pages, fewer than the %d recent ones", answered, recent)
			}
		})
	}
}

func ringReading(id int64, sec int) *iotgate.Reading {
	return &iotgate.Reading{ID: id, DeviceID: 7, DeviceJID: "d@example.com", ReceivedAt: ringT0.Add(time.Duration(sec) * time.Second),
		XML: "<r/>", Data: json.RawMessage(`{}`)}
}

// seeded returns a ring whose slot of d@example.com holds readings 1..n
// (received n..1 seconds after ringT0... in order), whole.
func seeded(t *testing.T, n int) *readingRing {
	t.Helper()
	g := newTestRing(1<<30, 10, 100, 0)
	tok, ok := g.startFill("d@example.com", 7)
	if !ok {
		t.Fatal("startFill refused")
	}
	var rs []*iotgate.Reading
	for i := n; i >= 1; i-- {
		rs = append(rs, ringReading(int64(i), i))
	}
	g.fill(tok, rs, true)
	return g
}

var newest10 = iotgate.ReadingFilter{Limit: 10, Desc: true}

// commit is what the committer does with rs: committing, then (the
// store's commit) committed.
func commit(g *readingRing, rs ...*iotgate.Reading) {
	g.committed(rs, g.committing(rs))
}

// TestRingCoherence covers what makes a slot stop answering: another
// instance's commit, a lost notification, a device change, a fill that
// raced with a commit, a JID registered again, retention.
func TestRingCoherence(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(g *readingRing)
		serves bool
	}{
		{"OK", func(g *readingRing) {}, true},
		{"OwnCommit", func(g *readingRing) { commit(g, ringReading(21, 21)) }, true},
		{"OwnCommitNotifiedFirst", func(g *readingRing) {
			rs := []*iotgate.Reading{ringReading(21, 21)}
			marked := g.committing(rs)
			g.notified(ringReading(21, 21), ringT0)
			g.committed(rs, marked)
		}, true},
		{"OtherInstanceCommitDuringOwn", func(g *readingRing) {
			rs := []*iotgate.Reading{ringReading(22, 22)}
			marked := g.committing(rs)
			g.notified(ringReading(21, 21), ringT0)
			g.committed(rs, marked)
		}, false},
		{"OwnCommitNotifiedAfter", func(g *readingRing) {
			commit(g, ringReading(21, 21))
			g.notified(ringReading(21, 21), ringT0)
		}, true},
		{"OtherInstanceCommit", func(g *readingRing) { g.notified(ringReading(21, 21), ringT0) }, false},
		{"OtherInstanceCommitThenOwn", func(g *readingRing) {
			g.notified(ringReading(21, 21), ringT0)
			commit(g, ringReading(22, 22))
		}, false},
		{"OtherInstanceOlderReading", func(g *readingRing) { g.notified(ringReading(21, 0), ringT0) }, false},
		{"NotificationsLost", func(g *readingRing) { g.forget("") }, false},
		{"DeviceChanged", func(g *readingRing) { g.forget("d@example.com") }, false},
		{"OtherDeviceChanged", func(g *readingRing) { g.forget("e@example.com") }, true},
		{"RegisteredAgain", func(g *readingRing) {
			r := ringReading(21, 21)
			r.DeviceID = 8
			g.notified(r, ringT0)
		}, false},
		{"UnstorableJSON", func(g *readingRing) {
			g.stored = func([]byte) ([]byte, bool) { return nil, false }
			commit(g, ringReading(21, 21))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := seeded(t, 20)
			tc.change(g)
			_, ok := g.page("d@example.com", 7, newest10, ringT0)
			if ok != tc.serves {
				t.Fatalf("served %v, want %v", ok, tc.serves)
			}
		})
	}
}

func TestRingFillRaces(t *testing.T) {
	for _, tc := range []struct {
		name   string
		during func(g *readingRing)
		serves bool
	}{
		{"OK", func(g *readingRing) {}, true},
		{"CommitDuringFill", func(g *readingRing) { commit(g, ringReading(21, 21)) }, false},
		{"NotifiedDuringFill", func(g *readingRing) { g.notified(ringReading(21, 21), ringT0) }, false},
		{"ForgetAllDuringFill", func(g *readingRing) { g.forget("") }, false},
		{"ForgetDuringFill", func(g *readingRing) { g.forget("d@example.com") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestRing(1<<30, 10, 100, 0)
			tok, ok := g.startFill("d@example.com", 7)
			if !ok {
				t.Fatal("startFill refused")
			}
			if _, again := g.startFill("d@example.com", 7); again {
				t.Fatal("a second fill of the same device started")
			}
			tc.during(g)
			g.fill(tok, []*iotgate.Reading{ringReading(2, 2), ringReading(1, 1)}, true)
			if _, ok := g.page("d@example.com", 7, newest10, ringT0); ok != tc.serves {
				t.Fatalf("served %v, want %v", ok, tc.serves)
			}
		})
	}
}

// TestRingSuspectExpires: a slot made suspect by another instance's
// reading is dropped after ringSuspectWait, so that the next page seeds
// it again.
func TestRingSuspectExpires(t *testing.T) {
	g := seeded(t, 20)
	g.committing([]*iotgate.Reading{ringReading(22, 22)}) // never done
	g.notified(ringReading(21, 21), ringT0)
	if _, ok := g.page("d@example.com", 7, newest10, ringT0.Add(ringSuspectWait)); ok {
		t.Fatal("a suspect slot served a page")
	}
	if n, _ := g.size(); n != 0 {
		t.Fatalf("%d slots after the suspect one expired, want 0", n)
	}
	if _, ok := g.startFill("d@example.com", 7); !ok {
		t.Fatal("no new fill after the suspect slot expired")
	}
}

func TestRingRetention(t *testing.T) {
	g := newTestRing(1<<30, 10, 100, 48*time.Hour)
	tok, _ := g.startFill("d@example.com", 7)
	g.fill(tok, []*iotgate.Reading{ringReading(4, 4), ringReading(3, 3), ringReading(2, 2), ringReading(1, 1)}, true)
	f := iotgate.ReadingFilter{Limit: 10, Desc: true}
	if p, ok := g.page("d@example.com", 7, f, ringT0); !ok || len(p.Items) != 4 {
		t.Fatalf("whole slot within retention: ok %v, page %+v", ok, p)
	}
	// Readings 1 and 2 now older than the retention (less the margin):
	// the store may have dropped them or not, so only pages that don't
	// reach them are answered.
	later := ringT0.Add(48*time.Hour - ringRetentionMargin + 2500*time.Millisecond)
	if _, ok := g.page("d@example.com", 7, f, later); ok {
		t.Fatal("answered a page reaching readings past the retention")
	}
	if p, ok := g.page("d@example.com", 7, iotgate.ReadingFilter{Limit: 1, Desc: true}, later); !ok || len(p.Items) != 1 || p.Items[0].ID != 4 || p.NextCursor == "" {
		t.Fatalf("page of 1 past the retention cut: ok %v, page %+v", ok, p)
	}
}

// TestRingBounds checks the byte, device and per-device bounds, LRU
// eviction, and that a page reaching the store's byte budget is left to
// the store.
func TestRingBounds(t *testing.T) {
	entry := newTestRing(1<<30, 10, 100, 0).entry(ringReading(1, 1)).mem
	t.Run("Devices", func(t *testing.T) {
		g := newTestRing(1<<30, 3, 100, 0)
		for i := range 5 {
			jid := fmt.Sprintf("d%d@example.com", i)
			tok, _ := g.startFill(jid, int64(i))
			g.fill(tok, nil, true)
		}
		if n, _ := g.size(); n != 3 {
			t.Fatalf("%d slots, want 3", n)
		}
		if _, ok := g.page("d0@example.com", 0, newest10, ringT0); ok {
			t.Fatal("the least recently used slot was kept")
		}
		if _, ok := g.page("d4@example.com", 4, newest10, ringT0); !ok {
			t.Fatal("the most recent slot was evicted")
		}
	})
	t.Run("Bytes", func(t *testing.T) {
		g := newTestRing(5*entry, 10, 100, 0)
		for d := range 3 {
			jid := fmt.Sprintf("d%d@example.com", d)
			tok, _ := g.startFill(jid, int64(d))
			var rs []*iotgate.Reading
			for i := 3; i >= 1; i-- {
				r := ringReading(int64(10*d+i), i)
				r.DeviceJID, r.DeviceID = jid, int64(d)
				rs = append(rs, r)
			}
			g.fill(tok, rs, true)
			if _, b := g.size(); b > 5*entry {
				t.Fatalf("%d bytes held, over the bound of %d", b, 5*entry)
			}
		}
		if n, _ := g.size(); n != 1 {
			t.Fatalf("%d slots, want 1 (3 readings each, room for 5)", n)
		}
	})
	t.Run("PerDevice", func(t *testing.T) {
		g := newTestRing(1<<30, 10, 4, 0)
		tok, _ := g.startFill("d@example.com", 7)
		g.fill(tok, []*iotgate.Reading{ringReading(2, 2), ringReading(1, 1)}, true)
		for i := int64(3); i <= 10; i++ {
			commit(g, ringReading(i, int(i)))
		}
		p, ok := g.page("d@example.com", 7, iotgate.ReadingFilter{Limit: 3, Desc: true}, ringT0)
		if !ok || !slices.Equal(ids(p.Items), []int64{10, 9, 8}) || p.NextCursor == "" {
			t.Fatalf("ok %v, page %v", ok, p)
		}
		if _, ok := g.page("d@example.com", 7, iotgate.ReadingFilter{Limit: 4, Desc: true}, ringT0); ok {
			t.Fatal("answered a page that needs more than the 4 readings kept")
		}
	})
	t.Run("PageBytes", func(t *testing.T) {
		g := seeded(t, 20)
		f := newest10
		f.MaxBytes = 5 * 70 // a reading costs 4 + 8*2 + 64 in the budget
		if _, ok := g.page("d@example.com", 7, f, ringT0); ok {
			t.Fatal("answered a page that could reach the byte budget")
		}
	})
}

// BenchmarkRingPage measures a recent page of 50 from memory.
func BenchmarkRingPage(b *testing.B) {
	g := newTestRing(64<<20, 10000, 128, 0)
	for d := range 16 {
		jid := fmt.Sprintf("d%d@example.com", d)
		tok, _ := g.startFill(jid, int64(d))
		var rs []*iotgate.Reading
		for i := 200; i >= 1; i-- {
			r := ringReading(int64(1000*d+i), i)
			r.DeviceJID, r.DeviceID = jid, int64(d)
			r.XML = `<reading xmlns="urn:example:thermostat" unit="C" seq="1"><temperature>21.50</temperature><humidity>45.0</humidity><mode>heat</mode><target>22.00</target><battery>false</battery></reading>`
			rs = append(rs, r)
		}
		g.fill(tok, rs, false)
	}
	f := iotgate.ReadingFilter{Limit: 50, Desc: true}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			d := i % 16
			if _, ok := g.page(fmt.Sprintf("d%d@example.com", d), int64(d), f, ringT0); !ok {
				b.Fatal("not answered")
			}
			i++
		}
	})
}

// BenchmarkRingCommitted measures the committer's cost per reading
// appended to a slot.
func BenchmarkRingCommitted(b *testing.B) {
	g := newTestRing(64<<20, 10000, 128, 0)
	tok, _ := g.startFill("d@example.com", 7)
	g.fill(tok, nil, true)
	b.ReportAllocs()
	for i := range b.N {
		commit(g, ringReading(int64(i+1), i+1))
	}
}

// TestRingFeedDown: while change notifications don't flow, the ring
// serves nothing and starts no fill (another instance's readings would
// go unseen); once they flow again, the flush ("" ) has emptied it.
func TestRingFeedDown(t *testing.T) {
	g := seeded(t, 20)
	live := true
	g.live = func() bool { return live }
	if _, ok := g.page("d@example.com", 7, newest10, ringT0); !ok {
		t.Fatal("not served while live")
	}
	live = false
	if _, ok := g.page("d@example.com", 7, newest10, ringT0); ok {
		t.Fatal("served while the feed is down")
	}
	if _, ok := g.startFill("e@example.com", 8); ok {
		t.Fatal("a fill started while the feed is down")
	}
	g.forget("") // what the reconnection dispatches, before live
	live = true
	if _, ok := g.page("d@example.com", 7, newest10, ringT0); ok {
		t.Fatal("served a slot from before the reconnection")
	}
}

// TestServiceStateEncoded: State hands out the cached newest reading with
// its encoding, made once, and the encoding follows the reading.
func TestServiceStateEncoded(t *testing.T) {
	f := newCacheFixture(t, ServiceConfig{EncodeReading: testEncode})
	f.register("e@example.com")
	for v := 1; v <= 3; v++ {
		f.ingest("e@example.com", v)
		st, got := f.state("e@example.com")
		if got != v || st.ReadingEncoded == nil || string(st.ReadingEncoded) != string(testEncode(nil, st.Reading)) {
			t.Fatalf("reading %d: value %d, encoded %s, want %s", v, got, st.ReadingEncoded, testEncode(nil, st.Reading))
		}
		again, _ := f.state("e@example.com")
		if &again.ReadingEncoded[0] != &st.ReadingEncoded[0] {
			t.Fatal("the reading was encoded again")
		}
	}
}

// TestServiceReadingsFromRing: the service seeds a device's ring at its
// first newest page, answers the next from memory with the store's
// readings, and adds what it commits.
func TestServiceReadingsFromRing(t *testing.T) {
	f := newCacheFixture(t, ServiceConfig{StoredJSON: sameJSON, EncodeReading: testEncode})
	f.register("p@example.com")
	for v := range 5 {
		f.ingest("p@example.com", v)
	}
	ctx := context.Background()
	q := iotgate.ReadingFilter{Limit: 3, Desc: true}
	for round, wantFromMemory := range []uint64{1, 2, 3} {
		if round == 2 {
			f.ingest("p@example.com", 5)
		}
		got, err := f.svc.Readings(ctx, "p@example.com", q)
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.store.Readings(ctx, "p@example.com", q)
		if err != nil {
			t.Fatal(err)
		}
		// (memstore gives no next cursor: PostgreSQL's are compared in
		// TestReadingRingMatchesStore.)
		if !slices.Equal(ids(got.Items), ids(want.Items)) || got.NextCursor == "" || len(got.Encoded) != len(got.Items) {
			t.Fatalf("round %d: %v next %q (%d encoded), want %v and a next cursor", round, ids(got.Items), got.NextCursor, len(got.Encoded), ids(want.Items))
		}
		if n, _ := f.svc.ReadingCacheStats(); n != wantFromMemory {
			t.Fatalf("round %d: %d pages from memory, want %d", round, n, wantFromMemory)
		}
	}
}
