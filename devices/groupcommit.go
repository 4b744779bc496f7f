package devices

import "sync"

// groupCommit runs concurrent writes of one kind as batches: a caller that
// finds no batch being written writes its own item together with whatever
// else is waiting, in one call of write (one transaction); callers that
// arrive meanwhile wait, and when the batch is done the oldest of them
// writes the next batch, with everything that has accumulated. Idle, an
// item is written at once and alone; under load, each write carries the
// items that arrived during the previous one, so the database does one
// transaction (one WAL flush, one statement) per batch rather than per
// command. No goroutine of its own: nothing to start or stop.
type groupCommit[T any] struct {
	// write stores items and returns one error per item.
	write func(items []T) []error
	// max bounds a batch.
	max int
	// conflicts, if set, reports whether two items may not share a
	// batch (two updates of one command): the later waits for the next.
	conflicts func(a, b T) bool

	mu      sync.Mutex
	waiting []*groupItem[T]
	busy    bool // a batch is being written
}

type groupItem[T any] struct {
	item T
	err  error
	done bool
	// wake is signaled once: when done, or when this item's caller is to
	// write the next batch.
	wake chan struct{}
}

// do writes item, in a batch with others, and returns its error.
func (g *groupCommit[T]) do(item T) error {
	it := &groupItem[T]{item: item, wake: make(chan struct{}, 1)}
	g.mu.Lock()
	g.waiting = append(g.waiting, it)
	if g.busy {
		g.mu.Unlock()
		<-it.wake
		g.mu.Lock()
		if it.done {
			g.mu.Unlock()
			return it.err
		}
		// Our turn to write the next batch (busy stays set).
	} else {
		g.busy = true
	}
	batch := g.take()
	g.mu.Unlock()

	items := make([]T, len(batch))
	for i, b := range batch {
		items[i] = b.item
	}
	errs := g.write(items)

	g.mu.Lock()
	for i, b := range batch {
		b.err, b.done = errs[i], true
		if b != it {
			b.wake <- struct{}{}
		}
	}
	if len(g.waiting) > 0 {
		// Hand the writing over rather than write for others: each caller
		// waits for at most the batch before its own.
		g.waiting[0].wake <- struct{}{}
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	return it.err
}

// take removes the next batch from the waiting items: the oldest first,
// at most max, skipping items that conflict with one already taken. g.mu
// is held.
func (g *groupCommit[T]) take() []*groupItem[T] {
	var batch, rest []*groupItem[T]
	for _, w := range g.waiting {
		if len(batch) >= g.max || g.conflicting(batch, w) {
			rest = append(rest, w)
			continue
		}
		batch = append(batch, w)
	}
	g.waiting = rest
	return batch
}

func (g *groupCommit[T]) conflicting(batch []*groupItem[T], w *groupItem[T]) bool {
	if g.conflicts == nil {
		return false
	}
	for _, b := range batch {
		if g.conflicts(b.item, w.item) {
			return true
		}
	}
	return false
}
