// Package webhooks pushes the event log to servers: the Service manages
// webhooks (service.go), the Dispatcher delivers them (dispatcher.go:
// leases, batching, retries; deliver.go: the signed POST), and ssrf.go
// keeps deliveries off the gateway's own networks.
//
// Guarantees: per webhook, events are delivered in id order, at least
// once (a batch whose 2xx was not recorded is sent again); the cursor,
// the last acknowledged id, is stored, so a restart resumes from it. With
// several instances a lease in the store lets one deliver a given webhook
// at a time. A failed batch is retried with exponential backoff and full
// jitter (1 s doubling to 10 min) until the failure streak is older than
// the retry limit (24 h); the webhook is then failing: it keeps its cursor
// and is not retried until resumed (PATCH paused=false), which starts
// over from the cursor with a fresh limit.
//
// It imports only the root package iotgate.
package webhooks
