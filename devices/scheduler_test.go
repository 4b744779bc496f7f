package devices

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestFairQueue(t *testing.T) {
	t.Run("RoundRobin", func(t *testing.T) {
		q := newFairQueue[string](QueueLimits{})
		for i := range 5 {
			q.push("flood", fmt.Sprint("f", i), 1)
		}
		q.push("a", "a0", 1)
		q.push("b", "b0", 1)
		q.push("a", "a1", 1)
		var got []string
		for {
			k, v, ok := q.next()
			if !ok {
				break
			}
			got = append(got, v)
			q.done(k)
		}
		want := []string{"f0", "a0", "b0", "f1", "a1", "f2", "f3", "f4"}
		if !slices.Equal(got, want) {
			t.Errorf("order %v, want %v", got, want)
		}
		if q.len() != 0 || len(q.keys) != 0 {
			t.Errorf("%d items, %d keys left", q.len(), len(q.keys))
		}
	})
	t.Run("CheckedOutKeyNotHandedOut", func(t *testing.T) {
		q := newFairQueue[int](QueueLimits{})
		q.push("a", 1, 1)
		q.push("a", 2, 1)
		k, v, _ := q.next()
		if _, _, ok := q.next(); ok {
			t.Fatal("a key handed out twice at once")
		}
		if ready, _ := q.push("a", 3, 1); ready {
			t.Error("a checked-out key joined the turn order")
		}
		q.done(k)
		var got []int
		for {
			k, v, ok := q.next()
			if !ok {
				break
			}
			got = append(got, v)
			q.done(k)
		}
		if v != 1 || !slices.Equal(got, []int{2, 3}) {
			t.Errorf("got %d then %v, want 1 then [2 3]", v, got)
		}
	})
	t.Run("Bounds", func(t *testing.T) {
		tests := []struct {
			name   string
			lim    QueueLimits
			pushes []int // sizes, all from key "a" but the last, from "b"
			want   string
		}{
			{"PerSenderCount", QueueLimits{PerSender: 2}, []int{1, 1, 1}, "a full"},
			{"PerSenderBytes", QueueLimits{PerSenderBytes: 10}, []int{6, 6}, "a full"},
			{"OneLargeItemFits", QueueLimits{PerSenderBytes: 10, TotalBytes: 10}, []int{50}, "ok"},
			{"TotalCount", QueueLimits{Total: 2}, []int{1, 1, 1}, "total full"},
			{"TotalBytes", QueueLimits{TotalBytes: 10}, []int{6, 6}, "total full"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				q := newFairQueue[int](tt.lim)
				got := "ok"
				for i, size := range tt.pushes {
					key := "a"
					if i == len(tt.pushes)-1 && tt.want == "total full" {
						key = "b"
					}
					if _, err := q.push(key, i, size); err != nil {
						if iotgate.ErrorCode(err) != iotgate.ETooMany {
							t.Fatalf("error %v, want too_many_requests", err)
						}
						got = key + " full"
						if key == "b" {
							got = "total full"
						}
					}
				}
				if got != tt.want {
					t.Errorf("got %s, want %s", got, tt.want)
				}
			})
		}
	})
}

func TestScheduler(t *testing.T) {
	t.Run("OrderPerSenderParallelAcross", func(t *testing.T) {
		s := NewScheduler(SchedulerConfig{Workers: 4})
		var mu sync.Mutex
		got := map[string][]int{}
		// A slow job delays only its own sender.
		release := make(chan struct{})
		s.Submit("slow", 1, func() { <-release })
		for i := range 100 {
			for _, k := range []string{"a", "b", "slow"} {
				if err := s.Submit(k, 1, func() {
					mu.Lock()
					got[k] = append(got[k], i)
					mu.Unlock()
				}); err != nil {
					t.Fatal(err)
				}
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			n := len(got["a"]) + len(got["b"])
			stuck := len(got["slow"])
			mu.Unlock()
			if stuck != 0 {
				t.Fatal("a sender's job ran before its earlier one finished")
			}
			if n == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of 200 jobs of other senders ran while one sender was stuck", n)
			}
			time.Sleep(time.Millisecond)
		}
		close(release)
		if err := s.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b", "slow"} {
			if !slices.IsSorted(got[k]) || len(got[k]) != 100 {
				t.Errorf("%s: %d jobs, in order %v", k, len(got[k]), slices.IsSorted(got[k]))
			}
		}
	})
	t.Run("FairToAQuietSender", func(t *testing.T) {
		// One worker, a flood of 1000 queued: the quiet sender's job
		// runs after at most one more flood job, not after all of them.
		s := NewScheduler(SchedulerConfig{Workers: 1})
		var mu sync.Mutex
		floodRan, quietAfter := 0, -1
		gate := make(chan struct{})
		s.Submit("flood", 1, func() { <-gate })
		for range 999 {
			s.Submit("flood", 1, func() { mu.Lock(); floodRan++; mu.Unlock() })
		}
		s.Submit("quiet", 1, func() { mu.Lock(); quietAfter = floodRan; mu.Unlock() })
		close(gate)
		s.Drain(context.Background())
		if quietAfter < 0 || quietAfter > 1 {
			t.Errorf("the quiet sender's job ran after %d flood jobs, want at most 1", quietAfter)
		}
	})
	t.Run("BoundsRefuseWithoutBlocking", func(t *testing.T) {
		s := NewScheduler(SchedulerConfig{Workers: 1, Limits: QueueLimits{PerSender: 3, Total: 5}})
		block := make(chan struct{})
		defer close(block)
		s.Submit("a", 1, func() { <-block }) // running, not queued
		for {
			if s.Queued() == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		var errs []string
		for _, k := range []string{"a", "a", "a", "a", "b", "b", "b"} {
			err := s.Submit(k, 1, func() {})
			errs = append(errs, iotgate.ErrorCode(err))
		}
		want := []string{"", "", "", iotgate.ETooMany, "", "", iotgate.ETooMany}
		if !slices.Equal(errs, want) {
			t.Errorf("codes %q, want %q", errs, want)
		}
	})
	t.Run("DrainRunsEveryQueuedJob", func(t *testing.T) {
		s := NewScheduler(SchedulerConfig{Workers: 2})
		var mu sync.Mutex
		answered := 0
		for i := range 500 {
			s.Submit(fmt.Sprint("d", i%7), 1, func() {
				time.Sleep(10 * time.Microsecond)
				mu.Lock()
				answered++
				mu.Unlock()
			})
		}
		if err := s.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		if answered != 500 {
			t.Errorf("%d of 500 queued jobs ran before Drain returned", answered)
		}
		if err := s.Submit("d0", 1, func() {}); iotgate.ErrorCode(err) != iotgate.EUnavailable {
			t.Errorf("Submit after Drain: %v, want unavailable", err)
		}
	})
	t.Run("DrainBoundedByContext", func(t *testing.T) {
		s := NewScheduler(SchedulerConfig{})
		block := make(chan struct{})
		defer close(block)
		s.Submit("a", 1, func() { <-block })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := s.Drain(ctx); err == nil {
			t.Error("Drain returned while a job still ran")
		}
	})
}

// TestCommitBatchesFair checks that a flooding device fills a commit
// batch only up to its share, so another device's reading is committed
// in the next batch rather than after the flood.
func TestCommitBatchesFair(t *testing.T) {
	store := &batchStore{gate: make(chan struct{}), floodGate: make(chan struct{})}
	s := NewService(store, anySchema{}, ServiceConfig{MaxBatch: 1000, MaxBatchPerDevice: 50, DeviceQueue: 2000})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-s.Stopped() }()
	go s.Run(ctx)

	in := func(from string) iotgate.IncomingReading {
		return iotgate.IncomingReading{From: from + "/r", Via: "message", Payloads: []iotgate.Payload{{Namespace: "urn:t", XML: []byte(`<x xmlns="urn:t"/>`)}}}
	}
	// Commits are held until the gate opens, so that readings queue up:
	// one committer holds the first reading, the other a flood batch.
	s.Ingest(ctx, in("first@example.com"), nil)
	waitFor(t, func() bool { return store.waiting() == 1 })
	for range 1000 {
		s.Ingest(ctx, in("flood@example.com"), nil)
	}
	waitFor(t, func() bool { return store.waiting() == 2 })
	quiet := make(chan error, 1)
	s.Ingest(ctx, in("quiet@example.com"), func(err error) { quiet <- err })
	close(store.gate) // the flood's commit stays held
	if err := <-quiet; err != nil {
		t.Fatal(err)
	}
	close(store.floodGate)
	// The quiet reading is committed in the first batch after those
	// two, and the flood (in a commit already) is not in it.
	batches := store.batches()
	for i, b := range batches {
		if !slices.Contains(b, "quiet@example.com") {
			continue
		}
		if i > 2 || len(b) != 1 {
			t.Errorf("quiet reading committed in batch %d of %d readings (sizes %v), want batch 2, alone", i, len(b), store.batchSizes())
		}
	}
	if sizes := store.batchSizes(); slices.Max(sizes) > 50 {
		t.Errorf("batch sizes %v, want at most 50 (MaxBatchPerDevice)", sizes)
	}
}
