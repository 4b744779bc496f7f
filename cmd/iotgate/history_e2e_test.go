//go:build integration

package main

import (
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2EHistoryForCharts drives the chart endpoints of issue #16 on the
// real binary and database: aggregates of a device's readings over time
// buckets (values checked against the readings inserted, refusals of
// non-numeric fields and of devices outside a token's selector), the
// states of many devices in one call, and the CSV export of every
// reading across pages.
func TestE2EHistoryForCharts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The roller runs every second: the aggregates over whole hours below
	// come from the rollups it writes.
	e := newCommandsEnv(t, ctx, "prosody", "IOTGATE_ROLLUP_INTERVAL", "1s")
	g := e.g
	berlin, paris := "b1@"+e.xs.Domain(), "p1@"+e.xs.Domain()
	for jid, site := range map[string]string{berlin: "berlin", paris: "paris"} {
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "labels": map[string]string{"site": site}}, nil); code != 201 {
			t.Fatalf("register device %s: %d", jid, code)
		}
	}
	db, err := sql.Open("postgres", e.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// 600 readings, one a minute over the 10 hours before the last whole
	// hour; temperature i % 50 / 2, the humidity only on even minutes.
	const n = 600
	end := time.Now().UTC().Truncate(time.Hour)
	start := end.Add(-n * time.Minute)
	// Inserted as the store does (with last_seen_at, which the roller
	// reads), the device's rollup mark reset in the same transaction:
	// these readings are older than any roll the roller may have made
	// of the device meanwhile.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct {
		q    string
		args []any
	}{{`
		INSERT INTO readings (device_id, received_at, xml, data)
		SELECT d.id, $2::timestamptz + i * interval '1 minute', '<reading/>',
			CASE WHEN i % 2 = 0
				THEN jsonb_build_object('temperature', (i % 50) / 2.0, 'humidity', 40 + i % 7, 'mode', 'heat', '@seq', i)
				ELSE jsonb_build_object('temperature', (i % 50) / 2.0, 'mode', 'heat', '@seq', i) END
		FROM devices d, generate_series(0, $3 - 1) i WHERE d.jid = $1`, []any{berlin, start, n}},
		{`UPDATE devices SET last_seen_at = $2 WHERE jid = $1`, []any{berlin, start.Add((n - 1) * time.Minute)}},
		{`UPDATE reading_rollup_marks m SET rolled_until = NULL FROM devices d WHERE d.id = m.device_id AND d.jid = $1`, []any{berlin}},
	} {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// Wait until the roller has rolled the hours that ended 10 minutes ago.
	rolled := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Hour)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var mark sql.NullTime
		var rows int
		err := db.QueryRowContext(ctx, `SELECT m.rolled_until, (SELECT count(*) FROM reading_rollups r WHERE r.device_id = d.id)
			FROM devices d JOIN reading_rollup_marks m ON m.device_id = d.id WHERE d.jid = $1`, berlin).Scan(&mark, &rows)
		if err != nil && err != sql.ErrNoRows {
			t.Fatal(err)
		}
		if mark.Valid && !mark.Time.Before(rolled) && rows > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the roller did not roll %s up to %s: mark %v, %d rows", berlin, rolled, mark, rows)
		}
	}
	var limited tokenBody
	if code := g.do("POST", "/v1/tokens", map[string]any{"name": "paris", "scopes": []string{"devices:read"}, "devices": map[string]string{"site": "paris"}}, &limited); code != 201 {
		t.Fatalf("create token: %d", code)
	}
	base := "/v1/devices/" + url.PathEscape(berlin) + "/readings"
	rng := "&from=" + start.Format(time.RFC3339) + "&to=" + end.Format(time.RFC3339)

	t.Run("Aggregate", func(t *testing.T) {
		var got struct {
			Buckets []struct {
				Start    time.Time                          `json:"start"`
				Readings int64                              `json:"readings"`
				Values   map[string]map[string]*json.Number `json:"values"`
			} `json:"buckets"`
		}
		path := base + "/aggregate?fields=temperature,humidity&fn=min,max,count,sum&every=1h" + rng
		if code := g.do("GET", path, nil, &got); code != 200 {
			t.Fatalf("GET %s: %d", path, code)
		}
		if len(got.Buckets) != n/60 {
			t.Fatalf("%d buckets, want %d", len(got.Buckets), n/60)
		}
		for h, b := range got.Buckets {
			var tmin, tmax, tsum float64 = 1e9, -1e9, 0
			hcount := 0
			for i := h * 60; i < (h+1)*60; i++ {
				v := float64(i%50) / 2
				tmin, tmax, tsum = min(tmin, v), max(tmax, v), tsum+v
				if i%2 == 0 {
					hcount++
				}
			}
			num := func(f, fn string) float64 {
				p := b.Values[f][fn]
				if p == nil {
					t.Fatalf("bucket %d: %s %s is null", h, f, fn)
				}
				v, err := p.Float64()
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			if !b.Start.Equal(start.Add(time.Duration(h)*time.Hour)) || b.Readings != 60 ||
				num("temperature", "min") != tmin || num("temperature", "max") != tmax || num("temperature", "sum") != tsum ||
				num("temperature", "count") != 60 || num("humidity", "count") != float64(hcount) {
				t.Errorf("bucket %d = %+v, want start %s, 60 readings, temperature %v..%v sum %v, %d humidities", h, b, start.Add(time.Duration(h)*time.Hour), tmin, tmax, tsum, hcount)
			}
		}
	})
	t.Run("AggregateFilled", func(t *testing.T) {
		var got struct {
			Buckets []struct {
				Readings int64                              `json:"readings"`
				Values   map[string]map[string]*json.Number `json:"values"`
			} `json:"buckets"`
		}
		// Two hours after the readings: buckets with no readings.
		path := base + "/aggregate?fields=temperature&every=30m&fill=null&from=" + start.Add(-time.Hour).Format(time.RFC3339) + "&to=" + start.Add(time.Hour).Format(time.RFC3339)
		if code := g.do("GET", path, nil, &got); code != 200 || len(got.Buckets) != 4 {
			t.Fatalf("GET %s: %d, %+v", path, code, got)
		}
		if got.Buckets[0].Readings != 0 || got.Buckets[0].Values["temperature"]["avg"] != nil || got.Buckets[3].Readings != 30 {
			t.Errorf("buckets = %+v, want 2 empty (null avg) then 2 of 30", got.Buckets)
		}
	})
	for _, tt := range []struct {
		name, token, query string
		status             int
		code               string
	}{
		{"ErrNotNumeric", g.token, "?fields=temperature,mode", 422, "field_not_numeric"},
		{"ErrUnknownField", g.token, "?fields=pressure", 422, "field_unknown"},
		{"ErrTooManyBuckets", g.token, "?fields=temperature&every=1s" + rng, 422, "too_many_buckets"},
		{"ErrOutsideSelector", limited.Secret, "?fields=temperature", 404, "not_found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var er struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			if code := g.doAs(tt.token, "GET", base+"/aggregate"+tt.query, nil, &er); code != tt.status || er.Code != tt.code {
				t.Errorf("= %d %+v, want %d %s", code, er, tt.status, tt.code)
			}
		})
	}

	t.Run("States", func(t *testing.T) {
		var got struct {
			Items []struct {
				JID     string `json:"jid"`
				Reading *struct {
					Data map[string]any `json:"data"`
				} `json:"reading"`
			} `json:"items"`
			NotFound []string `json:"not_found"`
		}
		body := map[string]any{"jids": []string{berlin, paris, "nobody@" + e.xs.Domain()}}
		if code := g.do("POST", "/v1/devices/states", body, &got); code != 200 || len(got.Items) != 2 || len(got.NotFound) != 1 {
			t.Fatalf("states: %d %+v", code, got)
		}
		if got.Items[0].JID != berlin || got.Items[0].Reading == nil || fmt.Sprint(got.Items[0].Reading.Data["@seq"]) != strconv.Itoa(n-1) || got.Items[1].Reading != nil {
			t.Errorf("states = %+v, want berlin's last reading (seq %d), none for paris", got, n-1)
		}
		// A limited token: berlin is as unknown as nobody.
		if code := g.doAs(limited.Secret, "POST", "/v1/devices/states", body, &got); code != 200 || len(got.Items) != 1 || got.Items[0].JID != paris || len(got.NotFound) != 2 {
			t.Errorf("states as paris: %d %+v", code, got)
		}
	})

	t.Run("ListWithStates", func(t *testing.T) {
		type list struct {
			Items []struct {
				JID    string `json:"jid"`
				Schema string `json:"schema"`
				State  *struct {
					JID     string `json:"jid"`
					Reading *struct {
						Data map[string]any `json:"data"`
					} `json:"reading"`
				} `json:"state"`
			} `json:"items"`
		}
		var got list
		if code := g.do("GET", "/v1/devices?include=state", nil, &got); code != 200 || len(got.Items) != 2 {
			t.Fatalf("list: %d %+v", code, got)
		}
		for _, d := range got.Items {
			if d.Schema != "thermostat" || d.State == nil || d.State.JID != d.JID {
				t.Fatalf("list = %+v, want each device with its state", got)
			}
		}
		if b := got.Items[0]; b.JID != berlin || b.State.Reading == nil || fmt.Sprint(b.State.Reading.Data["@seq"]) != strconv.Itoa(n-1) || got.Items[1].State.Reading != nil {
			t.Errorf("list = %+v, want berlin's last reading (seq %d), none for paris", got, n-1)
		}
		// A limited token lists its devices only, with their states.
		got = list{}
		if code := g.doAs(limited.Secret, "GET", "/v1/devices?include=state", nil, &got); code != 200 || len(got.Items) != 1 || got.Items[0].JID != paris || got.Items[0].State == nil {
			t.Errorf("list as paris: %d %+v", code, got)
		}
	})

	t.Run("CSV", func(t *testing.T) {
		// limit=45: the export walks 14 pages.
		req, err := http.NewRequest("GET", g.base+base+"?order=asc&limit=45", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+g.token)
		req.Header.Set("Accept", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" {
			t.Fatalf("= %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		rows, err := csv.NewReader(resp.Body).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		if got := resp.Trailer.Get("X-Next-Cursor"); got != "" {
			t.Errorf("X-Next-Cursor = %q on a whole export", got)
		}
		want := "received_at,device_time,@at,@seq,@unit,battery,heating,humidity,mode,target,temperature"
		if len(rows) != n+1 || strings.Join(rows[0], ",") != want {
			t.Fatalf("%d rows, header %v; want %d, %s", len(rows), rows[0], n+1, want)
		}
		col := map[string]int{}
		for i, h := range rows[0] {
			col[h] = i
		}
		for i, r := range rows[1:] {
			hum := ""
			if i%2 == 0 {
				hum = strconv.Itoa(40 + i%7)
			}
			at := start.Add(time.Duration(i) * time.Minute).Format(time.RFC3339Nano)
			if r[col["received_at"]] != at || r[col["@seq"]] != strconv.Itoa(i) || r[col["humidity"]] != hum || r[col["mode"]] != "heat" || r[col["target"]] != "" {
				t.Fatalf("row %d = %v, want received_at %s, @seq %d, humidity %q", i, r, at, i, hum)
			}
		}
	})
}
