package instances

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

type fakeStream struct{ up, refused bool }

func (s fakeStream) Health(context.Context) (bool, time.Time, error) { return s.up, time.Time{}, nil }
func (s fakeStream) Refused() bool                                   { return s.refused }

// fakeStore holds the others' rows and records this instance's beats.
type fakeStore struct {
	mu     sync.Mutex
	others []iotgate.Instance
	beats  []iotgate.Instance
	reaps  int
	left   []string
}

func (f *fakeStore) Heartbeat(_ context.Context, in iotgate.Instance) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beats = append(f.beats, in)
	return nil
}

func (f *fakeStore) Instances(context.Context, time.Duration) ([]iotgate.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]iotgate.Instance{{ID: "me", Streaming: true}}, f.others...), nil
}

func (f *fakeStore) ReapInstances(context.Context, time.Duration, time.Time, string, string) ([]string, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reaps++
	return nil, 0, nil
}

func (f *fakeStore) Leave(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = append(f.left, id)
	return nil
}

func TestRole(t *testing.T) {
	tests := []struct {
		name         string
		stream       fakeStream
		others       []iotgate.Instance
		want         iotgate.Role
		othersStream bool
	}{
		{"Alone", fakeStream{up: true}, nil, iotgate.RoleActive, false},
		{"OthersNotStreaming", fakeStream{up: true}, []iotgate.Instance{{ID: "b"}}, iotgate.RoleActive, false},
		{"Member", fakeStream{up: true}, []iotgate.Instance{{ID: "b", Streaming: true}}, iotgate.RoleMember, true},
		{"Standby", fakeStream{refused: true}, []iotgate.Instance{{ID: "b", Streaming: true}}, iotgate.RoleStandby, true},
		{"Disconnected", fakeStream{}, nil, iotgate.RoleDisconnected, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &fakeStore{others: tt.others}
			r := New(store, tt.stream, Config{ID: "me"})
			r.Beat(context.Background())
			if got := r.Role(context.Background()); got != tt.want {
				t.Errorf("Role = %s, want %s", got, tt.want)
			}
			if len(store.beats) != 1 || store.beats[0].Role != tt.want || store.beats[0].Streaming != tt.stream.up || store.beats[0].ID != "me" {
				t.Errorf("heartbeat = %+v", store.beats)
			}
			if store.reaps != 1 {
				t.Errorf("%d reaps per beat, want 1", store.reaps)
			}
			if got, _ := r.OthersStreaming(context.Background()); got != tt.othersStream {
				t.Errorf("OthersStreaming = %v, want %v", got, tt.othersStream)
			}
			if len(r.Others()) != len(tt.others) {
				t.Errorf("Others = %v, want %v (itself excluded)", r.Others(), tt.others)
			}
		})
	}
}

func TestRunLeavesAtStop(t *testing.T) {
	store := &fakeStore{}
	r := New(store, fakeStream{up: true}, Config{ID: "me", Heartbeat: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.beats) < 2 || len(store.left) != 1 || store.left[0] != "me" {
		t.Errorf("%d beats, left %v; want several beats, then [me]", len(store.beats), store.left)
	}
}
