package devices

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestWriteBatches(t *testing.T) {
	tests := []struct {
		name   string
		queued int // items waiting before the loop starts
		max    int
		want   []int // batch sizes
	}{
		{"Idle", 0, 3, nil},
		{"One", 1, 3, []int{1}},
		{"Full", 3, 3, []int{3}},
		{"SplitAtMax", 7, 3, []int{3, 3, 1}},
		{"MaxOne", 2, 1, []int{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := make(chan int, tt.queued)
			for i := range tt.queued {
				ch <- i
			}
			ctx, cancel := context.WithCancel(context.Background())
			var sizes []int
			var items []int
			written := make(chan struct{}, tt.queued)
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				writeBatches(ctx, ch, tt.max, func(b []int) {
					sizes = append(sizes, len(b))
					items = append(items, b...)
					for range b {
						written <- struct{}{}
					}
				})
			}()
			for range tt.queued {
				select {
				case <-written:
				case <-time.After(5 * time.Second):
					t.Fatal("items not written")
				}
			}
			cancel()
			<-stopped
			if !slices.Equal(sizes, tt.want) {
				t.Errorf("batch sizes = %v, want %v", sizes, tt.want)
			}
			for i, v := range items {
				if v != i {
					t.Fatalf("items = %v, want them in arrival order", items)
				}
			}
		})
	}
}

// An item sent while the loop is idle is written alone, without waiting
// for more.
func TestWriteBatchesIdleItemAtOnce(t *testing.T) {
	ch := make(chan int)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan []int, 1)
	go writeBatches(ctx, ch, 10, func(b []int) { got <- slices.Clone(b) })
	ch <- 42
	select {
	case b := <-got:
		if !slices.Equal(b, []int{42}) {
			t.Errorf("batch = %v, want [42]", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle item not written")
	}
}
