package iotgate

import (
	"context"
	"time"
)

// Role is what an instance does for its component domain.
type Role string

const (
	// RoleActive: its stream is up and no other live instance has one.
	RoleActive Role = "active"
	// RoleMember: its stream is up and so is another instance's; the
	// XMPP server spreads the domain's stanzas over them (ejabberd).
	RoleMember Role = "member"
	// RoleStandby: the server refused its stream because another
	// connection holds the domain (Prosody); it takes over when that one
	// goes.
	RoleStandby Role = "standby"
	// RoleDisconnected: its stream is down for another reason.
	RoleDisconnected Role = "disconnected"
)

// Instance is one running iotgate process, as the others see it.
type Instance struct {
	ID        string    `json:"id"`
	StartedAt time.Time `json:"started_at"`
	// SeenAt is its last heartbeat.
	SeenAt time.Time `json:"seen_at"`
	// Streaming is true while its XMPP stream is up.
	Streaming bool `json:"streaming"`
	Role      Role `json:"role"`
}

// InstanceStore is where instances meet: a heartbeat row each, and what
// the survivors do when one stops beating. Ages are measured on the
// store's clock, so that instances on hosts whose clocks disagree still
// agree on who is alive.
type InstanceStore interface {
	// Heartbeat records that in is alive now, as it describes itself
	// (SeenAt is the store's time; StartedAt is kept from the first one).
	Heartbeat(ctx context.Context, in Instance) error
	// Instances returns the instances seen within the last `within`.
	Instances(ctx context.Context, within time.Duration) ([]Instance, error)
	// ReapInstances removes the instances not seen within `within` and,
	// in the same transaction, fails their pending and sent commands with
	// code and reason. It returns the removed IDs and the commands failed.
	ReapInstances(ctx context.Context, within time.Duration, now time.Time, code, reason string) ([]string, int, error)
	// Leave removes the instance at a clean shutdown.
	Leave(ctx context.Context, id string) error
}

// DeliveryClaims make one instance at a time deliver a device's queued
// commands: a lease on the store's clock, renewed while delivering.
type DeliveryClaims interface {
	// ClaimDelivery takes or renews the lease on deviceJID's queue for
	// instance, for ttl. It returns false when another instance holds
	// a lease that has not run out.
	ClaimDelivery(ctx context.Context, deviceJID, instance string, ttl time.Duration) (bool, error)
	// ReleaseDelivery gives the lease up, if instance holds it.
	ReleaseDelivery(ctx context.Context, deviceJID, instance string) error
}
