package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

// changesChannel is iotgate's change feed (postgres.changesChannel): at
// each commit of readings it notifies, per device, the key of the newest
// reading committed (iotgate.ReadingKey). The notification goes out when
// the transaction commits, so its arrival bounds the commit from above.
const changesChannel = "iotgate_changes"

// sent is one paced message: its thermostat seq and when it was sent.
type sent struct {
	seq int64
	at  time.Time
}

// notified is one reading notification as the bench received it.
type notified struct {
	jid string
	id  int64
	at  time.Time
}

// pacedMessages sends message readings from every device to iotgate at
// rate per second in all, evenly spread, for d, and returns the time from
// each send to the notification of the commit that stored it: messages
// have no answer, so the change feed tells when each was committed. It
// also returns how many were sent and how many were never seen committed
// within 10 s of the last send.
func (s *ingestScenario) pacedMessages(ctx context.Context, rate float64, d time.Duration) (lat *latencies, n, missing int, err error) {
	l := pq.NewListener(s.e.pg.DSN(), 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen(changesChannel); err != nil {
		return nil, 0, 0, fmt.Errorf("listen: %w", err)
	}
	var (
		mu    sync.Mutex
		notes []notified
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case nt := <-l.Notify:
				if nt == nil { // reconnected: notifications may be lost
					continue
				}
				at := time.Now()
				key, ok := strings.CutPrefix(nt.Extra, "reading:")
				if !ok {
					continue
				}
				if r, ok := iotgate.ParseReadingKey(key); ok {
					mu.Lock()
					notes = append(notes, notified{jid: r.DeviceJID, id: r.ID, at: at})
					mu.Unlock()
				}
			}
		}
	}()

	// Each device sends every len(clients)/rate seconds, the devices
	// staggered over one interval.
	every := time.Duration(float64(len(s.clients)) / rate * float64(time.Second))
	sends := make([][]sent, len(s.clients))
	errs := make([]error, len(s.clients))
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range s.clients {
		wg.Go(func() {
			next := start.Add(every * time.Duration(i) / time.Duration(len(s.clients)))
			for next.Before(start.Add(d)) {
				select {
				case <-ctx.Done():
					errs[i] = ctx.Err()
					return
				case <-time.After(time.Until(next)):
				}
				payload := s.models[i].Reading(false)
				seq, err := seqOf(payload)
				if err != nil {
					errs[i] = err
					return
				}
				at := time.Now()
				if err := c.SendMessage(ctx, gateDomain, "", payload); err != nil {
					errs[i] = err
					return
				}
				sends[i] = append(sends[i], sent{seq: seq, at: at})
				next = next.Add(every)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			close(stop)
			return nil, 0, 0, err
		}
	}
	for _, ss := range sends {
		n += len(ss)
	}
	// Wait until every device's last send is seen committed, or 10 s.
	last := map[string]int64{}
	for i, c := range s.clients {
		if len(sends[i]) > 0 {
			last[bareOf(c.JID())] = sends[i][len(sends[i])-1].seq
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	seqs := map[int64]int64{}
	seen := map[string]int64{}
	read := 0 // notes whose seq is known
	for {
		mu.Lock()
		ns := append([]notified(nil), notes[read:]...)
		mu.Unlock()
		if err := s.seqsOf(ctx, ns, seqs); err != nil {
			close(stop)
			return nil, 0, 0, err
		}
		read += len(ns)
		for _, nt := range ns {
			seen[nt.jid] = max(seen[nt.jid], seqs[nt.id])
		}
		all := true
		for j, want := range last {
			all = all && seen[j] >= want
		}
		if all || time.Now().After(deadline) {
			close(stop)
			<-done
			break
		}
		select {
		case <-ctx.Done():
			close(stop)
			return nil, 0, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	<-done
	// A send is committed by the first notification of its device whose
	// reading has its seq or a later one (a device's readings are
	// committed in order).
	lat = &latencies{}
	byDevice := map[string][]notified{}
	for _, nt := range notes {
		byDevice[nt.jid] = append(byDevice[nt.jid], nt)
	}
	for i, c := range s.clients {
		ns := byDevice[bareOf(c.JID())]
		k := 0
		for _, sd := range sends[i] {
			for k < len(ns) && seqs[ns[k].id] < sd.seq {
				k++
			}
			if k == len(ns) {
				missing++
				continue
			}
			lat.add(ns[k].at.Sub(sd.at))
		}
	}
	return lat, n, missing, nil
}

// seqsOf adds the thermostat seq of each notified reading to out, by ID.
func (s *ingestScenario) seqsOf(ctx context.Context, ns []notified, out map[int64]int64) error {
	if len(ns) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(ns))
	for _, nt := range ns {
		ids = append(ids, nt.id)
	}
	rows, err := s.e.db.QueryContext(ctx, `SELECT id, (data->>'@seq')::bigint FROM readings WHERE id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return fmt.Errorf("seqs of notified readings: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return err
		}
		out[id] = seq
	}
	return rows.Err()
}

// seqOf returns the seq attribute of a simulated thermostat's reading.
func seqOf(payload string) (int64, error) {
	_, rest, ok := strings.Cut(payload, ` seq="`)
	if ok {
		v, _, ok2 := strings.Cut(rest, `"`)
		if n, err := strconv.ParseInt(v, 10, 64); ok2 && err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("no seq in reading %q", payload)
}

// bareOf returns a JID without its resource.
func bareOf(j string) string {
	b, _, _ := strings.Cut(j, "/")
	return b
}
