package postgres

// Translate exposes translate to the external tests.
var Translate = translate

// NotifyChanges exposes notifyChanges to the external tests.
var NotifyChanges = notifyChanges
