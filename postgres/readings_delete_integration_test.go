//go:build integration

package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/postgres"
)

// TestInsertReadingsDeviceDeletedDuringBatch checks the guarantee the
// foreign key gave before migration 0017, now kept by the batch's lock of
// its devices and the delete trigger: a reading is never stored for a
// deleted device, whichever of the batch and the delete comes first, and
// the other devices' readings of the batch are stored.
func TestInsertReadingsDeviceDeletedDuringBatch(t *testing.T) {
	tests := []struct {
		name string
		// deleteFirst: the delete has the device's row when the batch
		// comes; otherwise the batch has it when the delete comes.
		deleteFirst bool
		// wantGoneID: the gone device's reading gets an id (it was
		// stored, acknowledged, then deleted with its device).
		wantGoneID bool
	}{
		{name: "DeleteWaitsForBatch", deleteFirst: false, wantGoneID: true},
		{name: "BatchWaitsForDelete", deleteFirst: true, wantGoneID: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			db, reg, svc := newStack(t)
			devs := thermostats(t, reg, svc, "kept@example.com", "gone@example.com")
			kept, gone := devs[0], devs[1]
			now := time.Now().UTC()
			rs := []*iotgate.Reading{
				{DeviceID: kept.ID, DeviceJID: kept.JID, ReceivedAt: now, XML: "<a/>", Data: []byte(`{}`)},
				{DeviceID: gone.ID, DeviceJID: gone.JID, ReceivedAt: now, XML: "<b/>", Data: []byte(`{}`)},
				{DeviceID: kept.ID, DeviceJID: kept.JID, ReceivedAt: now.Add(time.Millisecond), XML: "<c/>", Data: []byte(`{}`)},
			}

			// hold is a session of the test's own, holding what makes the
			// other side wait.
			hold, err := db.SQL().Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Close()
			var holdTx *sql.Tx
			if tt.deleteFirst {
				// The delete has the row, not yet committed.
				if holdTx, err = hold.BeginTx(ctx, nil); err != nil {
					t.Fatal(err)
				}
				defer holdTx.Rollback()
				if _, err := holdTx.ExecContext(ctx, `DELETE FROM devices WHERE id = $1`, gone.ID); err != nil {
					t.Fatal(err)
				}
			} else {
				// The events lock: the batch stops after its insert,
				// its devices locked, before its events and commit.
				if _, err := hold.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, postgres.EventsLockKey); err != nil {
					t.Fatal(err)
				}
			}

			batch := make(chan error, 1)
			go func() { batch <- errors.Join(db.InsertReadings(ctx, rs)...) }()
			var deleted chan error
			if tt.deleteFirst {
				waitForLock(t, ctx, db, "transactionid", 1)
				if err := holdTx.Commit(); err != nil {
					t.Fatal(err)
				}
			} else {
				waitForLock(t, ctx, db, "advisory", 1)
				deleted = make(chan error, 1)
				go func() { deleted <- db.DeleteDevice(ctx, gone.JID) }()
				// The delete waits for the batch's transaction.
				waitForLock(t, ctx, db, "transactionid", 1)
				if _, err := hold.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, postgres.EventsLockKey); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-batch; err != nil {
				t.Fatalf("batch: %v", err)
			}
			if deleted != nil {
				if err := <-deleted; err != nil {
					t.Fatalf("delete: %v", err)
				}
			}

			if rs[0].ID == 0 || rs[2].ID == 0 {
				t.Errorf("kept device's readings: ids %d, %d; want both stored", rs[0].ID, rs[2].ID)
			}
			if got := rs[1].ID != 0; got != tt.wantGoneID {
				t.Errorf("gone device's reading stored (acknowledged): %v, want %v", got, tt.wantGoneID)
			}
			for _, tc := range []struct {
				dev  *iotgate.Device
				want int
			}{{kept, 2}, {gone, 0}} {
				var n int
				if err := db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM readings WHERE device_id = $1`, tc.dev.ID).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != tc.want {
					t.Errorf("%s: %d readings stored, want %d", tc.dev.JID, n, tc.want)
				}
			}
		})
	}
}

// waitForLock waits until n sessions of the test's database wait for a
// lock of the given kind (pg_stat_activity's wait_event: "advisory",
// "transactionid", "tuple").
func waitForLock(t *testing.T, ctx context.Context, db *postgres.DB, event string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got int
		err := db.SQL().QueryRowContext(ctx, `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = $1`, event).Scan(&got)
		if err != nil {
			t.Fatal(err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(fmt.Sprintf("no session waits for a %s lock after 10 s", event))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
