package memstore

import (
	"context"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestEventLog(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	var l EventLog
	l.SetLabels("a@x", map[string]string{"site": "berlin"})
	l.SetLabels("b@x", map[string]string{"site": "paris"})
	ids := l.Append(
		iotgate.Event{Type: iotgate.EventReading, Device: "a@x", Time: t0},
		iotgate.Event{Type: iotgate.EventReading, Device: "b@x", Time: t0.Add(time.Second)},
		iotgate.Event{Type: iotgate.EventPresence, Device: "a@x", Time: t0.Add(2 * time.Second)},
	)
	if ids[0] != 1 || ids[2] != 3 {
		t.Fatalf("ids = %v, want 1..3", ids)
	}
	tests := []struct {
		name string
		q    iotgate.EventQuery
		scan int
		want []int64
		next int64
		more bool
	}{
		{"All", iotgate.EventQuery{Limit: 10}, 0, []int64{1, 2, 3}, 3, false},
		{"After", iotgate.EventQuery{After: 1, Limit: 10}, 0, []int64{2, 3}, 3, false},
		{"Limit", iotgate.EventQuery{Limit: 2}, 0, []int64{1, 2}, 2, true},
		{"Scope", iotgate.EventQuery{Limit: 10, Filter: &iotgate.EventFilter{Scope: iotgate.Selector{"site": "berlin"}}}, 0, []int64{1, 3}, 3, false},
		{"Types", iotgate.EventQuery{Limit: 10, Filter: &iotgate.EventFilter{Types: []iotgate.EventType{iotgate.EventPresence}}}, 0, []int64{3}, 3, false},
		{"ScanBound", iotgate.EventQuery{Limit: 10, Filter: &iotgate.EventFilter{Devices: []string{"a@x"}}}, 2, []int64{1}, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l.Scan = tt.scan
			b, err := l.Events(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, e := range b.Events {
				got = append(got, e.ID)
			}
			if len(got) != len(tt.want) || b.Next != tt.next || b.More != tt.more {
				t.Fatalf("got ids %v next %d more %v, want %v next %d more %v", got, b.Next, b.More, tt.want, tt.next, tt.more)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got ids %v, want %v", got, tt.want)
				}
			}
		})
	}
	l.Scan = 0
	if n, _ := l.TrimEvents(ctx, t0.Add(1500*time.Millisecond), 10); n != 2 {
		t.Fatalf("trimmed %d, want 2", n)
	}
	if b, _ := l.EventBounds(ctx); b.Last != 3 || b.Trimmed != 2 {
		t.Fatalf("bounds = %+v, want last 3 trimmed 2", b)
	}
}
