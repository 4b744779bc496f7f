package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// Pages of readings and states are most of what the read API sends, and
// encoding/json spent most of its time on them re-validating each
// reading's data (a json.RawMessage is compacted again) and, by
// reflection, on the rest. writeReadings and writeState write the same
// bytes as c.JSON(ReadingList) and c.JSON(DeviceState) directly: data is
// PostgreSQL's jsonb output or iotgate's own rendering, valid JSON either
// way, so it only needs its whitespace removed. The tests hold them to
// encoding/json's output, and a fuzz test holds xsd.AppendJSONString to it.

// pagePool recycles the buffers pages are written into.
var pagePool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// writeReadings answers 200 with page as a ReadingList. A page from the
// device service's memory comes encoded already (by AppendReading).
func writeReadings(c echo.Context, page *iotgate.ReadingPage) error {
	if len(page.Encoded) == len(page.Items) && page.Encoded != nil {
		return writeList(c, len(page.Items), func(b []byte, i int) ([]byte, error) {
			return append(b, page.Encoded[i]...), nil
		}, page.NextCursor)
	}
	return writeList(c, len(page.Items), func(b []byte, i int) ([]byte, error) {
		return appendReading(b, page.Items[i]), nil
	}, page.NextCursor)
}

// AppendReading appends r as the API writes a Reading (as encoding/json
// would): what the device service keeps of the readings it serves pages
// of from memory (devices.ServiceConfig.EncodeReading).
func AppendReading(b []byte, r *iotgate.Reading) []byte { return appendReading(b, r) }

// listChunk is how much of a list's JSON writeList holds before writing it
// out.
const listChunk = 64 << 10

// writeList answers 200 with a list of n items as {"items":[...],
// "next_cursor":...} (the bytes of c.JSON of ReadingList, CommandList and
// the like), appending item i with add. It streams: the JSON is written
// out every listChunk bytes, so a page of huge rows (up to the page's byte
// budget, see iotgate.PageBytes) is never held whole a second time as
// JSON, only about one row of it. An error from add after the first write
// can't change the status any more: the client gets a truncated body, not
// valid JSON, and the error is logged.
func writeList(c echo.Context, n int, add func(b []byte, i int) ([]byte, error), next string) error {
	bp := pagePool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 { // don't keep the odd huge row's buffer
			pagePool.Put(bp)
		}
	}()
	w := c.Response()
	b := append((*bp)[:0], `{"items":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = add(b, i); err != nil {
			*bp = b
			return err
		}
		if len(b) >= listChunk {
			if !w.Committed {
				w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
				w.WriteHeader(http.StatusOK)
			}
			if _, err := w.Write(b); err != nil {
				*bp = b
				return err
			}
			b = b[:0]
		}
	}
	b = append(b, ']')
	if next != "" {
		b = append(b, `,"next_cursor":`...)
		b = xsd.AppendJSONString(b, next)
	}
	b = append(b, "}\n"...)
	*bp = b
	if !w.Committed {
		// With its length known, net/http sends the page in one piece
		// rather than chunked: a write (a syscall) less per page, which
		// was a fifth of the cost of a page served from memory.
		w.Header().Set(echo.HeaderContentLength, strconv.Itoa(len(b)))
		return c.JSONBlob(http.StatusOK, b)
	}
	_, err := w.Write(b)
	return err
}

// appendJSON appends v as encoding/json (and so c.JSON) encodes it.
func appendJSON(b []byte, v any) ([]byte, error) {
	j, err := json.Marshal(v)
	return append(b, j...), err
}

// writeState answers 200 with st as a DeviceState.
func writeState(c echo.Context, st *iotgate.State) error {
	bp := pagePool.Get().(*[]byte)
	b := appendState((*bp)[:0], st)
	b = append(b, '\n')
	err := c.JSONBlob(http.StatusOK, b)
	*bp = b
	pagePool.Put(bp)
	return err
}

// appendState appends st as encoding/json encodes a DeviceState.
func appendState(b []byte, st *iotgate.State) []byte {
	b = append(b, `{"jid":`...)
	b = xsd.AppendJSONString(b, st.JID)
	b = append(b, `,"online":`...)
	b = appendBool(b, st.Online)
	b = append(b, `,"presence_stale":`...)
	b = appendBool(b, st.PresenceStale)
	b = append(b, `,"resources":[`...)
	for i, r := range st.Resources {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"jid":`...)
		b = xsd.AppendJSONString(b, r.JID)
		if r.Show != "" {
			b = append(b, `,"show":`...)
			b = xsd.AppendJSONString(b, r.Show)
		}
		if r.Status != "" {
			b = append(b, `,"status":`...)
			b = xsd.AppendJSONString(b, r.Status)
		}
		b = append(b, `,"priority":`...)
		b = appendInt(b, int64(r.Priority))
		b = append(b, `,"since":`...)
		b = appendTime(b, r.Since)
		b = append(b, '}')
	}
	b = append(b, `],"last_seen_at":`...)
	if st.LastSeenAt != nil {
		b = appendTime(b, *st.LastSeenAt)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"reading":`...)
	if st.Reading != nil && st.ReadingEncoded != nil {
		b = append(b, st.ReadingEncoded...)
	} else if st.Reading != nil {
		b = appendReading(b, st.Reading)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// appendReading appends r as encoding/json encodes a Reading.
func appendReading(b []byte, r *iotgate.Reading) []byte {
	b = append(b, `{"id":`...)
	b = appendInt(b, r.ID)
	b = append(b, `,"received_at":`...)
	b = appendTime(b, r.ReceivedAt)
	b = append(b, `,"device_time":`...)
	if r.DeviceTime != nil {
		b = appendTime(b, *r.DeviceTime)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"xml":`...)
	b = xsd.AppendJSONString(b, r.XML)
	b = append(b, `,"data":`...)
	if len(r.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = appendCompactJSON(b, r.Data)
	}
	return append(b, '}')
}

func appendInt(b []byte, n int64) []byte {
	return strconv.AppendInt(b, n, 10)
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds, quoted). Times come from the store or the clock, always
// within years 0-9999.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// plainByte tells the ASCII bytes a JSON string holds as they are, and
// compactPlain the bytes appendCompactJSON copies without a look: a
// table is cheaper than a chain of comparisons in these per-byte loops.
var plainByte, compactPlain [256]bool

func init() {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		plainByte[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	for c := range 256 {
		compactPlain[c] = plainByte[c] || c >= utf8.RuneSelf && c != 0xE2
	}
	compactPlain[' '] = false
}

// appendCompactJSON appends the valid JSON value v as encoding/json
// writes a json.RawMessage with HTML escaping on: without the whitespace
// between tokens (PostgreSQL's jsonb output has a space after each colon
// and comma), with <, >, &, U+2028 and U+2029 escaped, and without
// validating it.
func appendCompactJSON(b []byte, v []byte) []byte {
	inString := false
	start := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if compactPlain[c] {
			continue
		}
		switch {
		case c == '<' || c == '>' || c == '&':
			b = append(b, v[start:i]...)
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			start = i + 1
		case c == 0xE2 && i+2 < len(v) && v[i+1] == 0x80 && v[i+2]&^1 == 0xA8:
			b = append(b, v[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[v[i+2]&0xF])
			i += 2
			start = i + 1
		case inString:
			switch c {
			case '\\':
				i++ // the escaped byte is ASCII, and plain here
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			b = append(b, v[start:i]...)
			start = i + 1
		}
	}
	return append(b, v[start:]...)
}
