//go:build integration

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// getRaw GETs path with token and returns the status, the Retry-After
// and the body.
func (g *gate) getRaw(token, path string) (int, string, []byte) {
	g.t.Helper()
	req, err := http.NewRequest("GET", g.base+path, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

// TestE2EPagesBounded performs the attacks of issue #15 "Responses
// bounded in bytes" on the real binary and database: 300 readings of
// ~60 KB and commands with 1 MiB answers asked for with limit=1000 come
// in pages of about IOTGATE_MAX_PAGE_BYTES that together hold every row
// once; and a token's list requests beyond IOTGATE_MAX_HEAVY_PER_TOKEN get
// 429 too_many_concurrent while another token is served.
func TestE2EPagesBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "prosody", "IOTGATE_MAX_HEAVY_PER_TOKEN", "2")
	g := e.g
	jid := "big@" + e.xs.Domain()
	if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, nil); code != 201 {
		t.Fatalf("register device: %d", code)
	}
	db, err := sql.Open("postgres", e.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// 300 readings of 60,800 bytes of XML each, as a device would have
	// sent them (hex: nothing to escape, so the JSON is the size stored).
	if _, err := db.ExecContext(ctx, `
		INSERT INTO readings (device_id, received_at, xml, data)
		SELECT d.id, now() - interval '1 ms' * s,
			'<reading xmlns=''urn:example:thermostat''><mode>' ||
				(SELECT string_agg(md5(random()::text || s || x), '') FROM generate_series(1, 1900) x) || '</mode></reading>',
			jsonb_build_object('n', s)
		FROM devices d, generate_series(1, 300) s WHERE d.jid = $1`, jid); err != nil {
		t.Fatal(err)
	}
	const budget, row = 4 << 20, 61 << 10

	type page struct {
		Items []struct {
			ID  json.RawMessage `json:"id"`
			XML string          `json:"xml"`
		} `json:"items"`
		NextCursor string `json:"next_cursor"`
	}
	walk := func(t *testing.T, path string, n int, rowMax int) {
		t.Helper()
		seen := map[string]bool{}
		cursor := ""
		for pages := 1; ; pages++ {
			p := path
			if cursor != "" {
				p += "&cursor=" + url.QueryEscape(cursor)
			}
			code, _, body := g.getRaw(g.token, p)
			if code != 200 {
				t.Fatalf("GET %s: %d %s", p, code, body)
			}
			// Within the budget plus one row, plus the JSON around
			// the rows.
			if len(body) > budget+rowMax+64<<10 {
				t.Errorf("page %d is %d bytes, budget %d", pages, len(body), budget)
			}
			var pg page
			if err := json.Unmarshal(body, &pg); err != nil {
				t.Fatal(err)
			}
			if len(pg.Items) == 0 {
				t.Fatalf("page %d is empty", pages)
			}
			for _, it := range pg.Items {
				if seen[string(it.ID)] {
					t.Fatalf("row %s served twice", it.ID)
				}
				seen[string(it.ID)] = true
			}
			t.Logf("page %d: %d rows, %d bytes", pages, len(pg.Items), len(body))
			if pg.NextCursor == "" {
				break
			}
			cursor = pg.NextCursor
		}
		if len(seen) != n {
			t.Errorf("%d rows across the pages, want %d", len(seen), n)
		}
	}
	devicePath := "/v1/devices/" + url.PathEscape(jid)
	t.Run("Readings", func(t *testing.T) { walk(t, devicePath+"/readings?limit=1000", 300, row) })

	t.Run("Commands", func(t *testing.T) {
		const n = 12
		for range n {
			if code := g.do("POST", devicePath+"/commands", map[string]any{"payload": setTarget("21"), "mode": "queue"}, nil); code/100 != 2 {
				t.Fatalf("queue a command: %d", code)
			}
		}
		// Their answers, 1 MiB each (as a device may send).
		if _, err := db.ExecContext(ctx, `
			UPDATE commands c SET response_xml = '<r xmlns=''urn:example:thermostat''>' ||
				(SELECT string_agg(md5(random()::text || c.id || x), '') FROM generate_series(1, 32768) x) || '</r>'
			FROM devices d WHERE d.id = c.device_id AND d.jid = $1`, jid); err != nil {
			t.Fatal(err)
		}
		walk(t, devicePath+"/commands?limit=1000", n, 1<<20+4<<10)
	})

	t.Run("Concurrent", func(t *testing.T) {
		var other struct {
			Secret string `json:"token"`
		}
		if code := g.do("POST", "/v1/tokens", map[string]any{"name": "other", "scopes": []string{"devices:read"}}, &other); code != 201 {
			t.Fatalf("create token: %d", code)
		}
		// Hold the readings: each page waits on the lock, in progress.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `LOCK TABLE readings IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		codes := make(chan int, 2)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _, _ := g.getRaw(g.token, devicePath+"/readings?limit=1000")
				codes <- code
			}()
		}
		pollWithin(t, "two pages waiting on the lock", 20*time.Second, func() bool {
			var n int
			err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%page_before%'`).Scan(&n)
			return err == nil && n >= 2
		})
		code, retry, body := g.getRaw(g.token, devicePath+"/readings?limit=1000")
		var e struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(body, &e)
		if code != 429 || e.Code != "too_many_concurrent" || retry == "" {
			t.Errorf("third page of the token: %d %q, Retry-After %q; want 429 too_many_concurrent with Retry-After", code, e.Code, retry)
		}
		// Another token is served meanwhile.
		if code, _, body := g.getRaw(other.Secret, devicePath+"/commands?limit=1"); code != 200 {
			t.Errorf("other token's page: %d %s", code, body)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != 200 {
				t.Errorf("a held page ended with %d", c)
			}
		}
		if code, _, _ := g.getRaw(g.token, devicePath+"/readings?limit=1"); code != 200 {
			t.Errorf("after the held pages: %d, want 200", code)
		}
	})
}
