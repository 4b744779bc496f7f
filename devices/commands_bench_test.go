package devices

import (
	"context"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

// BenchmarkCommandSync measures the command service's own cost of a sync
// command (Submit, the execution, the answer, Wait) over an in-memory
// store and a sender that answers at once; go test -bench
// CommandSync -benchmem ./devices/ gives its allocations per command.
func BenchmarkCommandSync(b *testing.B) {
	f := newCmdFixture(b, CommandsConfig{MaxInFlight: 1000})
	b.Cleanup(f.stop)
	answer := result(`<state xmlns="urn:example:t"><target>21.5</target></state>`)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case c := <-f.sender.calls:
				c.reply <- answer
			case <-done:
				return
			}
		}
	}()
	ctx := context.Background()
	req := iotgate.CommandRequest{DeviceJID: devJID, Payload: payload, Timeout: 5 * time.Second}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, _, err := f.svc.Submit(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if c, err = f.svc.Wait(ctx, c.ID, 5*time.Second); err != nil {
			b.Fatal(err)
		}
		if c.Status != iotgate.CommandSucceeded {
			b.Fatalf("status %s, want succeeded", c.Status)
		}
	}
}
