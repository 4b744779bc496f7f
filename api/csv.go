package api

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// MaxExportDuration bounds a CSV export of readings: past it, the export
// ends after the page in progress and the X-Next-Cursor trailer says
// where to continue. It holds one of the token's heavy slots meanwhile.
const MaxExportDuration = 10 * time.Minute

// nextCursorTrailer is the HTTP trailer of a CSV export that stopped
// before the last reading: the cursor to continue with.
const nextCursorTrailer = "X-Next-Cursor"

// acceptsCSV reports whether an Accept header asks for text/csv: one of
// its media ranges is text/csv with a q above 0. JSON stays the default.
func acceptsCSV(accept string) bool {
	if accept == "" {
		return false
	}
	for _, r := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(r))
		if err == nil && mt == "text/csv" && params["q"] != "0" && params["q"] != "0.0" && params["q"] != "0.00" && params["q"] != "0.000" {
			return true
		}
	}
	return false
}

// readingsCSV streams a device's readings as CSV, page by page through
// the store's cursor (each page bounded in rows and bytes as in JSON), so
// that an export of any size holds one page in memory. The columns are
// fixed before the first row, from the device's schema version: readings
// stored under another version may have fields without a column (left
// out) or columns without a value (empty). An error after the first row
// can't change the status: the body ends early, and the error is logged.
func (h *deviceHandler) readingsCSV(c echo.Context) error {
	jid, f, err := h.jidAndFilter(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	fields, err := h.svc.ReadingFields(ctx, jid)
	if err != nil {
		return fmt.Errorf("export readings: %w", err)
	}
	if c.QueryParam("limit") == "" {
		f.Limit = iotgate.MaxPageLimit
	}
	w := c.Response()
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(MaxExportDuration)
	cw := csv.NewWriter(w)
	row := make([]string, 2+len(fields))
	var data map[string]any
	for {
		// Each page gets the server's write timeout anew: a slow
		// reader still times out, a long export does not.
		_ = rc.SetWriteDeadline(time.Now().Add(h.writeTimeout))
		page, err := h.svc.Readings(ctx, jid, f)
		if err != nil {
			return fmt.Errorf("export readings: %w", err)
		}
		if !w.Committed {
			hd := w.Header()
			hd.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
			hd.Set(echo.HeaderContentDisposition, `attachment; filename="readings.csv"`)
			hd.Set("Trailer", nextCursorTrailer)
			w.WriteHeader(http.StatusOK)
			row[0], row[1] = "received_at", "device_time"
			for i, p := range fields {
				row[2+i] = p.String()
			}
			if err := cw.Write(row); err != nil {
				return err
			}
		}
		for _, r := range page.Items {
			row[0] = r.ReceivedAt.Format(time.RFC3339Nano)
			row[1] = ""
			if r.DeviceTime != nil {
				row[1] = r.DeviceTime.Format(time.RFC3339Nano)
			}
			data = decodeData(r.Data)
			for i, p := range fields {
				row[2+i] = csvValue(lookup(data, p))
			}
			if err := cw.Write(row); err != nil {
				return err
			}
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		if page.NextCursor == "" {
			return nil
		}
		if time.Now().After(deadline) {
			w.Header().Set(nextCursorTrailer, page.NextCursor)
			return nil
		}
		f.Cursor = page.NextCursor
	}
}

// decodeData decodes a reading's JSON data, numbers as json.Number (exact,
// as stored); nil if it is not an object.
func decodeData(raw json.RawMessage) map[string]any {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return nil
	}
	return m
}

// lookup returns the value at path in data, nil if there is none.
func lookup(data map[string]any, path iotgate.FieldPath) any {
	var v any = data
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// csvValue formats a JSON value as a CSV cell: numbers as stored, true
// and false, strings as they are, nested values (from readings of another
// schema version) as compact JSON, null as empty. A string that a
// spreadsheet would run as a formula (starting with =, +, -, @, tab or
// carriage return) is prefixed with ' (OWASP's advice on CSV injection):
// devices' strings are hostile input, the CSV is opened by people.
func csvValue(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case json.Number:
		return v.String()
	case bool:
		if v {
			return "true"
		}
		return "false"
	case string:
		if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			return "'" + v
		}
		return v
	}
	b, _ := json.Marshal(v)
	return csvValue(string(b))
}
