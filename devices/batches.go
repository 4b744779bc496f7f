package devices

import "context"

// writeBatches writes what arrives on ch in batches until ctx ends: it
// blocks for one item, takes whatever else is already waiting (without
// waiting for more) up to max items, and calls write with the batch.
// Idle, an item is written at once and alone; under load, a batch carries
// what arrived during the previous write. It is the loop behind the
// asynchronous, fire-and-forget writes (rejections, presence history),
// whose senders never learn the outcome.
//
// The two other batching mechanisms of this package are not built on it,
// because a channel drained in arrival order can't give what they must:
//   - groupCommit (commands) is synchronous: each caller waits for its own
//     item's error, the caller itself writes (no goroutine to start or
//     stop), writing is handed to the oldest waiter, and conflicting items
//     (two updates of one command) never share a batch.
//   - Service.Run (readings) takes batches from the per-device fair queue,
//     round-robin over devices with a per-device share, keeps a device's
//     queue checked out so that several committers at once still store
//     its readings in order, lingers while a batch fills, puts held
//     readings first and retries them with backoff, and answers each
//     reading's sender. A FIFO channel would let one flooding device fill
//     every batch and reorder a device's readings across committers.
func writeBatches[T any](ctx context.Context, ch <-chan T, max int, write func([]T)) {
	for {
		var batch []T
		select {
		case v := <-ch:
			batch = append(batch, v)
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < max {
			select {
			case v := <-ch:
				batch = append(batch, v)
			default:
				break fill
			}
		}
		write(batch)
	}
}
