package devices

import (
	"time"

	"github.com/iotgate/iotgate"
)

// Refusal reasons reported to an Observer: the values of the reason label
// of iotgate_readings_refused_total. They are a metric's label set, coarser
// than the error vocabulary (iotgate.E*, iotgate.Detail*) on purpose: one
// series per way a reading can be lost, stable for dashboards.
const (
	RefusedInvalid      = "invalid"      // the payload failed its schema (or had none in its namespace)
	RefusedUnregistered = "unregistered" // the sender is not a registered device
	RefusedUnavailable  = "unavailable"  // not stored: database or registry down, shutting down
	RefusedQueueFull    = "queue_full"   // the ingest queue was full
)

// Observer receives measurements from the ingest path and the command
// service, for metrics. The
// service calls it synchronously: implementations must be quick and safe
// for concurrent use.
type Observer interface {
	// ReadingsCommitted reports one group commit: how many readings and
	// how long the transaction took.
	ReadingsCommitted(n int, d time.Duration)
	// ReadingRefused reports one reading not stored, and why.
	ReadingRefused(reason string)
	// CommandFinished reports a command that reached a terminal status,
	// with its error code (CmdErr..., "" on success) and how long it took
	// from creation (0 when unknown).
	CommandFinished(status iotgate.CommandStatus, code string, d time.Duration)
}

type nopObserver struct{}

func (nopObserver) ReadingsCommitted(int, time.Duration)                         {}
func (nopObserver) ReadingRefused(string)                                        {}
func (nopObserver) CommandFinished(iotgate.CommandStatus, string, time.Duration) {}
