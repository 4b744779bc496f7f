// Package iotgate is iotgate's domain vocabulary: the one error type with
// its codes (Error, E*), the plain types every layer speaks (Device,
// Reading, Rejection, Command and its statuses, IncomingReading, Payload,
// Resource), and the ports the domain needs from its adapters
// (DeviceStore, CommandStore, PresenceStore, SchemaSource).
//
// It does no I/O, starts no goroutine and imports no package of the
// project: every other package may import it. The services that use these
// types live in devices (and schemas, auth); the adapters that implement
// the ports are named after what they wrap (postgres, component, api), and
// cmd/iotgate wires them together.
package iotgate
