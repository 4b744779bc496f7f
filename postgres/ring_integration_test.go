//go:build integration

package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
)

// TestStoredJSONMatchesPostgres holds postgres.StoredJSON to what
// PostgreSQL prints of the same JSON stored as jsonb, over hand-picked
// and random values: the reading ring serves the former where a page
// read from the store serves the latter.
func TestStoredJSONMatchesPostgres(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, servers.DatabaseForTest(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cases := []string{
		`{}`, `[]`, `null`, `true`, `0`, `-0`, `-0.0`, `1.50e1`, `1E5`, `1e-3`, `-1.5E+2`, `123.4500`, `0.000`, `1e0`, `12e-1`,
		`"a"`, `{"temperature": 21.50, "mode": "heat", "@unit": "C", "b": [1, 2.0, {"z": null, "aa": false}]}`,
		`{"s": "\u003ctag\u003e \u0026 \u2028 \u2029 é \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t \u0001 \u001f \u007f"}`,
		`{"bb": 1, "a": 2, "ab": 3, "b": 4, "": 5, "é": 6}`,
		`{"x": {"y": {"z": [[], {}, [[]]]}}}`,
		`[1e300, -1e-300, 100000000000000000000000000000000000001]`,
	}
	// The worst cases of jsonb's size against its text.
	cases = append(cases, "["+strings.Repeat("0,", 999)+"0]", "["+strings.Repeat("[0],", 999)+"[0]]", "["+strings.Repeat("[],", 999)+"[]]")
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		cases = append(cases, randomJSON(rng, 0))
	}
	for i, in := range cases {
		var want string
		var size int
		if err := db.SQL().QueryRowContext(ctx, `SELECT $1::jsonb::text, pg_column_size($1::jsonb)`, in).Scan(&want, &size); err != nil {
			t.Fatalf("case %d %s: %v", i, in, err)
		}
		// The bound the reading ring counts a reading's JSON at in a
		// page's byte budget (devices.readingRing.entry).
		if bound := 8*len(want) + 64; size > bound {
			t.Errorf("case %d %s: jsonb of %d bytes, over the bound %d", i, in, size, bound)
		}
		got, ok := postgres.StoredJSON([]byte(in))
		if !ok {
			t.Errorf("case %d %s: not followed, PostgreSQL prints %s", i, in, want)
			continue
		}
		if string(got) != want {
			t.Errorf("case %d %s:\n got %s\nwant %s", i, in, got, want)
		}
	}
	t.Run("NotFollowed", func(t *testing.T) {
		for _, in := range []string{`{"a": 1, "a": 2}`, `1e5000`, `{`, `[1] [2]`} {
			if out, ok := postgres.StoredJSON([]byte(in)); ok {
				t.Errorf("%s: got %s, want not followed", in, out)
			}
		}
	})
}

// randomJSON returns a random JSON value in the forms iotgate's renderer
// and hostile input may take.
func randomJSON(rng *rand.Rand, depth int) string {
	k := rng.IntN(8)
	if depth == 0 {
		k = 6 + rng.IntN(2)
	}
	if depth > 3 {
		k = rng.IntN(5)
	}
	switch k {
	case 0:
		return []string{"true", "false", "null"}[rng.IntN(3)]
	case 1, 2:
		n := strconv.Itoa(rng.IntN(100000) - 50000)
		if rng.IntN(2) == 0 {
			n += "." + strings.Repeat("0", rng.IntN(3)) + strconv.Itoa(rng.IntN(1000))
		}
		if rng.IntN(4) == 0 {
			n += []string{"e", "E", "e+", "e-", "E-"}[rng.IntN(5)] + strconv.Itoa(rng.IntN(30))
		}
		return n
	case 3, 4:
		return randomJSONString(rng)
	case 5, 6:
		var parts []string
		for range rng.IntN(5) {
			parts = append(parts, randomJSON(rng, depth+1))
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		var parts []string
		seen := map[string]bool{}
		for range rng.IntN(6) {
			key := randomJSONString(rng)
			var k string
			if json.Unmarshal([]byte(key), &k) != nil || seen[k] {
				continue
			}
			seen[k] = true
			parts = append(parts, key+": "+randomJSON(rng, depth+1))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
}

func randomJSONString(rng *rand.Rand) string {
	pieces := []string{"a", "bc", "temperature", "@unit", "#text", "é", "😀", `\u003c`, `\u0026`, `\u2028`, `\"`, `\\`, `\/`, `\n`, `\t`, `\u0007`, " ", "<", ">", "&", "\u2029", `\ud83d\ude00`}
	var b strings.Builder
	b.WriteByte('"')
	for range rng.IntN(5) {
		b.WriteString(pieces[rng.IntN(len(pieces))])
	}
	b.WriteByte('"')
	return b.String()
}

// countingStore counts the pages of readings read from PostgreSQL.
type countingStore struct {
	*postgres.DB
	pages atomic.Int64
}

func (s *countingStore) Readings(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.ReadingPage, error) {
	s.pages.Add(1)
	return s.DB.Readings(ctx, jid, f)
}

// encodeForTest stands for api.AppendReading (adapters don't import
// each other, tests neither): any encoding of every field.
func encodeForTest(b []byte, r *iotgate.Reading) []byte {
	j, _ := json.Marshal(struct {
		ID         int64
		ReceivedAt time.Time
		DeviceTime *time.Time
		XML        string
		Data       string
	}{r.ID, r.ReceivedAt, r.DeviceTime, r.XML, string(r.Data)})
	return append(b, j...)
}

// TestReadingRingMatchesStore reads pages of readings through a device
// service that keeps the newest readings in memory, seeded from
// PostgreSQL and then fed by its committer (iotgate's own rendering,
// turned into the stored form), and holds each to the page PostgreSQL
// gives for the same query: same readings, same fields byte for byte
// (the JSON above all), same next cursor, over random limits, cursors,
// orders and since/until. Recent pages must cost no query.
func TestReadingRingMatchesStore(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, servers.DatabaseForTest(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store := &countingStore{DB: db}
	reg := schemas.NewRegistry(db, schemas.Config{})
	const perDevice = 40
	svc := devices.NewService(store, reg, devices.ServiceConfig{RingPerDevice: perDevice,
		StoredJSON: postgres.StoredJSON, EncodeReading: encodeForTest})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	d := thermostats(t, reg, svc, "ring@example.com")[0]

	// 60 readings stored straight in the store (another instance's, from
	// before): the seed reads them back.
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	var old []*iotgate.Reading
	for i := range 60 {
		old = append(old, &iotgate.Reading{DeviceID: d.ID, ReceivedAt: start.Add(time.Duration(i/3) * time.Second),
			XML: string(reading(fmt.Sprintf("%d.%02d", i, i))), Data: []byte(fmt.Sprintf(`{"temperature": %d.%02d, "mode": "heat", "@unit": "C"}`, i, i))})
	}
	if err := errors.Join(db.InsertReadings(ctx, old)...); err != nil {
		t.Fatal(err)
	}
	newest := iotgate.ReadingFilter{Limit: 10, Desc: true}
	if _, err := svc.Readings(ctx, d.JID, newest); err != nil {
		t.Fatal(err)
	}
	before := store.pages.Load()
	if _, err := svc.Readings(ctx, d.JID, newest); err != nil {
		t.Fatal(err)
	}
	if n := store.pages.Load() - before; n != 0 {
		t.Fatalf("the second newest page read the store %d times, want 0", n)
	}
	// Readings through the service: its committer adds them.
	temps := []string{"21.50", "-3", "0.1", "150", "+7.5", "007", "-0.00", "12."}
	for i := range 30 {
		x := fmt.Sprintf(`<reading xmlns="urn:example:thermostat" unit="F"><temperature>%s</temperature><mode>cool</mode></reading>`, temps[i%len(temps)])
		in := iotgate.IncomingReading{From: d.JID + "/r", Via: "iq",
			Payloads: []iotgate.Payload{{Namespace: "urn:example:thermostat", Local: "reading", XML: []byte(x)}}}
		if i%2 == 0 {
			// A device time with nanoseconds and a zone: stored to the
			// microsecond, in UTC.
			dt := time.Now().Add(-1500 * time.Millisecond).In(time.FixedZone("", 3600))
			in.DeviceTime = &dt
		}
		if err := ingest(t, svc, in); err != nil {
			t.Fatal(err)
		}
	}
	before = store.pages.Load()
	if p, err := svc.Readings(ctx, d.JID, newest); err != nil || len(p.Encoded) != 10 {
		t.Fatalf("newest page after ingest: %v, %d encoded items, want 10", err, len(p.Encoded))
	}
	if n := store.pages.Load() - before; n != 0 {
		t.Fatalf("the newest page after ingest read the store %d times, want 0", n)
	}

	all, err := db.Readings(ctx, d.JID, iotgate.ReadingFilter{Limit: 1000, Desc: true})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	served := 0
	for step := range 400 {
		f := iotgate.ReadingFilter{Limit: 1 + rng.IntN(50), Desc: rng.IntN(3) > 0}
		if rng.IntN(3) == 0 {
			r := all.Items[rng.IntN(len(all.Items))]
			f.Cursor = iotgate.TimeCursor{At: r.ReceivedAt, ID: r.ID}.String()
		}
		if rng.IntN(4) == 0 {
			s := all.Items[rng.IntN(len(all.Items))].ReceivedAt.Add(time.Duration(rng.IntN(3)-1) * time.Microsecond)
			f.Since = &s
		}
		if rng.IntN(5) == 0 {
			u := all.Items[rng.IntN(len(all.Items))].ReceivedAt.Add(time.Duration(rng.IntN(3)-1) * time.Microsecond)
			f.Until = &u
		}
		before := store.pages.Load()
		got, err := svc.Readings(ctx, d.JID, f)
		if err != nil {
			t.Fatal(err)
		}
		if store.pages.Load() == before {
			served++
		}
		want, err := db.Readings(ctx, d.JID, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := samePage(got, want); err != nil {
			t.Fatalf("step %d, filter %+v (from memory: %v): %v", step, f, store.pages.Load() == before, err)
		}
		if got.Encoded != nil {
			for i, r := range want.Items {
				if enc := encodeForTest(nil, r); string(got.Encoded[i]) != string(enc) {
					t.Fatalf("step %d: item %d encoded\n%s\nwant\n%s", step, i, got.Encoded[i], enc)
				}
			}
		}
	}
	if served == 0 {
		t.Fatal("no page came from memory")
	}
	t.Logf("%d of 400 pages from memory", served)

	t.Run("DeleteDevice", func(t *testing.T) {
		if err := svc.Delete(ctx, d.JID); err != nil {
			t.Fatal(err)
		}
		d2 := thermostats(t, reg, svc, d.JID)[0]
		p, err := svc.Readings(ctx, d2.JID, newest)
		if err != nil || len(p.Items) != 0 {
			t.Fatalf("a device registered again under the JID: %v, %d readings, want none", err, len(p.Items))
		}
	})
}

// samePage compares two pages field by field, the JSON byte for byte.
func samePage(got, want *iotgate.ReadingPage) error {
	if len(got.Items) != len(want.Items) || got.NextCursor != want.NextCursor {
		return fmt.Errorf("%d readings, next %q; want %d, next %q", len(got.Items), got.NextCursor, len(want.Items), want.NextCursor)
	}
	for i, g := range got.Items {
		w := want.Items[i]
		if g.ID != w.ID || !g.ReceivedAt.Equal(w.ReceivedAt) || g.ReceivedAt.Location() != w.ReceivedAt.Location() ||
			(g.DeviceTime == nil) != (w.DeviceTime == nil) || g.DeviceTime != nil && !g.DeviceTime.Equal(*w.DeviceTime) ||
			g.XML != w.XML || string(g.Data) != string(w.Data) {
			return fmt.Errorf("item %d:\n got %d %s %s %s\nwant %d %s %s %s", i, g.ID, g.ReceivedAt, g.XML, g.Data, w.ID, w.ReceivedAt, w.XML, w.Data)
		}
	}
	return nil
}
