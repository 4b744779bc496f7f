package iotgate_test

import (
	"slices"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestApplyPresence(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		u         iotgate.PresenceUpdate
		wantAdded bool
		want      []string // full JIDs, highest priority first
	}{
		{"NewResource", iotgate.PresenceUpdate{From: "d@x/c", Available: true, Priority: 9}, true, []string{"d@x/c", "d@x/b", "d@x/a"}},
		{"Changed", iotgate.PresenceUpdate{From: "d@x/a", Available: true, Priority: 9}, false, []string{"d@x/a", "d@x/b"}},
		{"Leaves", iotgate.PresenceUpdate{From: "d@x/a"}, false, []string{"d@x/b"}},
		{"UnknownLeaves", iotgate.PresenceUpdate{From: "d@x/z"}, false, []string{"d@x/b", "d@x/a"}},
		{"BareUnavailable", iotgate.PresenceUpdate{From: "d@x"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := map[string]iotgate.Resource{
				"d@x/a": {JID: "d@x/a", Priority: 1, Since: t0},
				"d@x/b": {JID: "d@x/b", Priority: 5, Since: t0},
			}
			if added := iotgate.ApplyPresence(rs, tt.u, t0.Add(time.Minute)); added != tt.wantAdded {
				t.Errorf("added = %v, want %v", added, tt.wantAdded)
			}
			var got []string
			for _, r := range iotgate.SortedResources(rs) {
				got = append(got, r.JID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("resources = %v, want %v", got, tt.want)
			}
			if r, ok := rs["d@x/a"]; ok && !r.Since.Equal(t0) {
				t.Errorf("since = %v, want kept %v", r.Since, t0)
			}
		})
	}
}
