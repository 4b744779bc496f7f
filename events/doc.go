// Package events serves the event log live: a Hub (one per process) reads
// the log after its last id whenever PostgreSQL says events were written
// (or its poll timer fires) and fans each event out, in memory, to the
// subscriptions of the SSE streams (a hub without subscriptions reads
// nothing: its first subscription moves it to the log's end); a Subscription resumes from an id by
// replaying the log first and then continues live, with no gap and no
// duplicate at the seam. The Trimmer deletes events older than the
// retention window.
//
// hub.go is the reader and the fan-out, subscription.go a subscriber's
// bounded backlog and its replay, trimmer.go the retention loop.
//
// It is a capability package: it imports the root package iotgate (the
// EventLog port and the event types) and no adapter (api, component,
// postgres), nor webhooks.
package events
