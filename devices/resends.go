package devices

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// maxResendID bounds the IQ ids remembered: a longer one is not.
const maxResendID = 256

// resends remembers the IQ readings answered unavailable after a commit
// that failed in a way that may have committed them (the connection broke
// during the commit), so that the device's resend under the same IQ id,
// with the same payload, is looked for before it is stored again (it
// takes the first attempt's receipt time and MaybeStored). Bounded in
// count (oldest forgotten first) and in time; a forgotten attempt's resend
// may be stored twice, as before. Safe for concurrent use.
type resends struct {
	max  int
	ttl  time.Duration
	seed maphash.Seed

	// size is len(m), read without the lock: take, on every IQ
	// reading, costs nothing while no attempt is remembered.
	size atomic.Int64

	mu sync.Mutex
	m  map[resendKey]resendEntry
	// order is m's keys, oldest first, with when each was remembered: an
	// item whose entry was taken (or remembered again since) is stale and
	// skipped.
	order []resendItem
}

type resendItem struct {
	key resendKey
	at  time.Time
}

type resendKey struct {
	dev int64
	id  string
}

type resendEntry struct {
	receivedAt time.Time
	sum        uint64 // of the payload's XML
	at         time.Time
}

func newResends(max int, ttl time.Duration) *resends {
	return &resends{max: max, ttl: ttl, seed: maphash.MakeSeed(), m: make(map[resendKey]resendEntry)}
}

// remember records that device dev's reading sent as IQ id, with payload
// xml, received at receivedAt, may have been stored.
func (r *resends) remember(dev int64, id, xml string, receivedAt, now time.Time) {
	if id == "" || len(id) > maxResendID {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.sized()
	r.expire(now)
	for len(r.m) >= r.max && len(r.order) > 0 {
		r.drop()
	}
	if len(r.order) >= 2*r.max {
		r.compact()
	}
	k := resendKey{dev, id}
	r.order = append(r.order, resendItem{k, now})
	r.m[k] = resendEntry{receivedAt: receivedAt, sum: maphash.String(r.seed, xml), at: now}
}

// take returns the receipt time of the attempt remembered for device dev's
// IQ id, if its payload was xml, and forgets it.
func (r *resends) take(dev int64, id, xml string, now time.Time) (receivedAt time.Time, ok bool) {
	if id == "" || len(id) > maxResendID || r.size.Load() == 0 {
		return time.Time{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.sized()
	r.expire(now)
	k := resendKey{dev, id}
	e, ok := r.m[k]
	if !ok || e.sum != maphash.String(r.seed, xml) {
		return time.Time{}, false
	}
	delete(r.m, k)
	return e.receivedAt, true
}

// sized publishes len(m); r.mu is held.
func (r *resends) sized() { r.size.Store(int64(len(r.m))) }

// live reports whether it is the item of an attempt still remembered.
func (r *resends) live(it resendItem) bool {
	e, ok := r.m[it.key]
	return ok && e.at.Equal(it.at)
}

// expire forgets the attempts older than ttl.
func (r *resends) expire(now time.Time) {
	for len(r.order) > 0 {
		if it := r.order[0]; r.live(it) && now.Sub(it.at) < r.ttl {
			return
		}
		r.drop()
	}
}

// drop forgets the oldest item in order, and its attempt if it is live.
func (r *resends) drop() {
	if r.live(r.order[0]) {
		delete(r.m, r.order[0].key)
	}
	r.order[0] = resendItem{}
	r.order = r.order[1:]
	if len(r.order) == 0 {
		r.order = nil // let the array go
	}
}

// compact drops the stale items from order: attempts taken and
// remembered again would otherwise grow it beyond m.
func (r *resends) compact() {
	kept := make([]resendItem, 0, len(r.m))
	for _, it := range r.order {
		if r.live(it) {
			kept = append(kept, it)
		}
	}
	r.order = kept
}
