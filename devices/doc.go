// Package devices holds iotgate's device services: the registry (devices
// and their cache), ingest (the queue, group commit, rejections),
// presence, and commands (submit, wait, cancel, delivery), with the ports
// they consume (CommandSender, PresenceView, Observer).
//
// Nothing here does I/O on its own: storage, XMPP and HTTP live in
// adapters that implement or call these services. It may import the root
// package iotgate (the types, the error type, the store ports) and no
// adapter (api, component, postgres) nor cmd.
package devices
