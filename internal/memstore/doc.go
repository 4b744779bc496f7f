// Package memstore holds in-memory implementations of the root package's
// store ports (iotgate.DeviceStore, iotgate.CommandStore,
// iotgate.PresenceStore, ...), for tests only: one shared fake of each
// port, with the semantics the PostgreSQL store documents where the tests
// depend on them. A test that needs a store to misbehave embeds one of
// these and overrides the method concerned.
//
// It imports only the root package iotgate; nothing but tests imports it.
package memstore
