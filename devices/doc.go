// Package devices holds iotgate's device services: the registry (devices
// and their cache), ingest (the queue, group commit, rejections),
// presence, and commands (submit, wait, cancel, delivery), with the ports
// they consume (CommandSender, PresenceView, Fleet, Observer).
//
// One capability per file: service.go (the Service and its config),
// registry.go and cache.go, ingest.go, scheduler.go and fairqueue.go (the
// per-sender queues), commit.go (the readings' group commit), rejections.go,
// presence.go and presenceupdates.go, tokenbucket.go, domains.go;
// commands.go (the Commands service, its ports, Wait and Cancel),
// submit.go, payload.go, execution.go (the state machine), outcomes.go,
// semaphore.go, delivery.go, lifecycle.go (recover at start, drain at shutdown),
// groupcommit.go; batches.go is the batching loop of the asynchronous
// writes.
//
// Nothing here does I/O on its own: storage, XMPP and HTTP live in
// adapters that implement or call these services. It may import the root
// package iotgate (the types, the error type, the store ports) and no
// adapter (api, component, postgres) nor cmd.
package devices
