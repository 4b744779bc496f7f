package devices

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

func TestPresence(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	d := &iotgate.Device{ID: 7, JID: "t@example.com"}
	type step struct {
		name       string
		do         func(p *Presence)
		wantOnline bool
		wantStale  bool
		wantRes    []string // full JIDs, in order
	}
	steps := []step{
		{"StaleAtStart", func(p *Presence) {}, false, true, nil},
		{"Fresh", func(p *Presence) { p.MarkFresh() }, false, false, nil},
		{"OneResource", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/a", Available: true, Priority: 0})
		}, true, false, []string{"t@example.com/a"}},
		{"HigherPriorityFirst", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/b", Available: true, Priority: 5, Show: "away"})
		}, true, false, []string{"t@example.com/b", "t@example.com/a"}},
		{"ResourceLeaves", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/b"})
		}, true, false, []string{"t@example.com/a"}},
		{"UnknownResourceLeaves", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/zzz"})
		}, true, false, []string{"t@example.com/a"}},
		{"StreamDrops", func(p *Presence) { p.MarkStale() }, false, true, nil},
		{"BackAndProbed", func(p *Presence) {
			p.MarkFresh()
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/a", Available: true})
		}, true, false, []string{"t@example.com/a"}},
		{"Forgotten", func(p *Presence) { p.Forget(d.JID) }, false, false, nil},
	}
	store := &memstore.PresenceStore{}
	p := NewPresence(store, clock, nil)
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do(p)
			online, stale := p.Online(d.JID)
			if online != s.wantOnline || stale != s.wantStale {
				t.Errorf("online, stale = %v, %v; want %v, %v", online, stale, s.wantOnline, s.wantStale)
			}
			var got []string
			for _, r := range p.Resources(d.JID) {
				got = append(got, r.JID)
			}
			if len(got) != len(s.wantRes) {
				t.Fatalf("resources = %v, want %v", got, s.wantRes)
			}
			for i := range got {
				if got[i] != s.wantRes[i] {
					t.Errorf("resources = %v, want %v", got, s.wantRes)
				}
			}
		})
	}
	// Transitions only: online, offline (stream drop), online; each with
	// the resources available after it.
	var evs []string
	for len(p.events) > 0 {
		ev := <-p.events
		s := fmt.Sprint(ev.Online)
		for _, r := range ev.Resources {
			s += " " + r.JID
		}
		evs = append(evs, s)
	}
	if want := []string{"true t@example.com/a", "false", "true t@example.com/a"}; !slices.Equal(evs, want) {
		t.Errorf("events = %q, want %q", evs, want)
	}
}
