package postgres

// Translate exposes translate to the external tests.
var Translate = translate

// NotifyChanges exposes notifyChanges to the external tests.
var NotifyChanges = notifyChanges

// AggregateRaw exposes aggregateRaw: the answers the rollups must match.
var AggregateRaw = (*DB).aggregateRaw
