package devices

import (
	"fmt"

	"github.com/iotgate/iotgate"
)

// QueueLimits bounds a queue of work kept per sender: how many items and
// bytes one sender may have waiting, and all senders together. Zero
// fields take the defaults noted.
type QueueLimits struct {
	PerSender      int // items; default 1000
	PerSenderBytes int // default 4 MiB
	Total          int // items; default 20000
	TotalBytes     int // default 64 MiB
}

func (l *QueueLimits) setDefaults() {
	if l.PerSender <= 0 {
		l.PerSender = 1000
	}
	if l.PerSenderBytes <= 0 {
		l.PerSenderBytes = 4 << 20
	}
	if l.Total <= 0 {
		l.Total = 20000
	}
	if l.TotalBytes <= 0 {
		l.TotalBytes = 64 << 20
	}
}

// fairQueue holds items in one FIFO per key (a sender) and hands them out
// round-robin over the keys: a key with a thousand items waiting delays
// another key's next item by one item, not a thousand. A key handed out
// is checked out (not handed out again) until done is called for it, so a
// consumer can keep one key's items in order while others run, or cap a
// key's share of a batch. It is bounded per key and in total, in items
// and bytes. It is not safe for concurrent use: callers hold a lock.
//
// It is the one primitive behind both the ingest scheduler (per-device
// order and fairness between the stream reader and validation) and the
// committer's batches (fairness between validation and PostgreSQL).
type fairQueue[T any] struct {
	lim   QueueLimits
	keys  map[string]*keyQueue[T]
	ready []*keyQueue[T] // keys with items, not checked out, in turn order
	head  int            // ready[:head] are consumed
	n     int            // items in all keys
	bytes int
}

type keyQueue[T any] struct {
	key     string
	items   []sized[T]
	first   int // items[:first] are consumed
	bytes   int
	out     bool // checked out
	inReady bool
}

type sized[T any] struct {
	v    T
	size int
}

func newFairQueue[T any](lim QueueLimits) *fairQueue[T] {
	lim.setDefaults()
	return &fairQueue[T]{lim: lim, keys: map[string]*keyQueue[T]{}}
}

// push appends v (size bytes) to key's queue; ready says whether key
// joined the turn order (it is not checked out and had nothing queued).
// Errors: too_many_requests when key's queue or the whole queue is full;
// nothing is queued then.
func (q *fairQueue[T]) push(key string, v T, size int) (ready bool, err error) {
	k := q.keys[key]
	kn, kb := 0, 0
	if k != nil {
		kn, kb = len(k.items)-k.first, k.bytes
	}
	switch {
	case kn >= q.lim.PerSender || kn > 0 && kb+size > q.lim.PerSenderBytes:
		return false, &iotgate.Error{Code: iotgate.ETooMany, Message: fmt.Sprintf("too many readings queued for this sender (at most %d, %d bytes)", q.lim.PerSender, q.lim.PerSenderBytes)}
	case q.n >= q.lim.Total || q.n > 0 && q.bytes+size > q.lim.TotalBytes:
		return false, &iotgate.Error{Code: iotgate.ETooMany, Message: "too many readings queued, try again later"}
	}
	if k == nil {
		k = &keyQueue[T]{key: key}
		q.keys[key] = k
	}
	k.items = append(k.items, sized[T]{v, size})
	k.bytes += size
	q.n++
	q.bytes += size
	if k.out || k.inReady {
		return false, nil
	}
	q.addReady(k)
	return true, nil
}

// next hands out the oldest item of the key whose turn it is, and checks
// that key out. ok is false when no key that is not checked out has items.
func (q *fairQueue[T]) next() (key string, v T, ok bool) {
	if q.head == len(q.ready) {
		return "", v, false
	}
	k := q.ready[q.head]
	q.ready[q.head] = nil
	q.head++
	if q.head == len(q.ready) {
		q.ready, q.head = q.ready[:0], 0
	}
	k.inReady = false
	k.out = true
	it := k.items[k.first]
	var zero sized[T]
	k.items[k.first] = zero // let the item be collected once used
	k.first++
	k.bytes -= it.size
	q.n--
	q.bytes -= it.size
	return k.key, it.v, true
}

// more hands out the next item of a key that is checked out.
func (q *fairQueue[T]) more(key string) (v T, ok bool) {
	k := q.keys[key]
	if k == nil || !k.out || k.first == len(k.items) {
		return v, false
	}
	it := k.items[k.first]
	var zero sized[T]
	k.items[k.first] = zero
	k.first++
	k.bytes -= it.size
	q.n--
	q.bytes -= it.size
	return it.v, true
}

// hasReady reports whether next would hand out an item.
func (q *fairQueue[T]) hasReady() bool { return q.head < len(q.ready) }

// done returns a checked-out key to the end of the turn order if it has
// items left, and forgets it otherwise.
func (q *fairQueue[T]) done(key string) {
	k := q.keys[key]
	if k == nil || !k.out {
		return
	}
	k.out = false
	if k.first == len(k.items) {
		delete(q.keys, key)
		return
	}
	q.addReady(k)
}

func (q *fairQueue[T]) addReady(k *keyQueue[T]) {
	if k.first > 0 && k.first >= len(k.items)/2 {
		// Compact: a long-lived busy key must not grow its slice forever.
		n := copy(k.items, k.items[k.first:])
		clear(k.items[n:])
		k.items, k.first = k.items[:n], 0
	}
	if q.head > 0 && q.head >= len(q.ready)/2 {
		n := copy(q.ready, q.ready[q.head:])
		clear(q.ready[n:])
		q.ready, q.head = q.ready[:n], 0
	}
	k.inReady = true
	q.ready = append(q.ready, k)
}

// len returns the number of items queued.
func (q *fairQueue[T]) len() int { return q.n }
