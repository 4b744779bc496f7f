package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

func TestAggregate(t *testing.T) {
	const base = "/v1/devices/thermo1%40example.com/readings/aggregate"
	tests := []struct {
		apiCase
		// want, if set, is the query the service must get (To zero:
		// defaulted to about now).
		want *iotgate.AggregateQuery
	}{
		{apiCase: apiCase{name: "OK", target: base + "?fields=temperature,humidity&from=2026-01-02T00:00:00Z&to=2026-01-03T00:00:00Z&every=1h&fn=avg,count", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[AggregateResponse](t, rec)
				if got.EverySeconds != 3600 || !slices.Equal(got.Fields, []string{"temperature", "humidity"}) || !slices.Equal(got.Fn, []string{"avg", "count"}) || len(got.Buckets) != 1 {
					t.Fatalf("response = %+v", got)
				}
				if v := got.Buckets[0].Values["humidity"]["avg"]; v == nil || *v != "1" {
					t.Errorf("humidity avg = %v, want 1", v)
				}
			}},
			want: &iotgate.AggregateQuery{From: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC), Every: time.Hour,
				Fields: []iotgate.FieldPath{{"temperature"}, {"humidity"}}, Funcs: []iotgate.AggregateFunc{iotgate.AggAvg, iotgate.AggCount}}},
		{apiCase: apiCase{name: "Defaults", target: base + "?fields=sensor.value,@seq&fill=null", status: http.StatusOK},
			want: &iotgate.AggregateQuery{Every: DefaultAggregateEvery, Fill: true, Fields: []iotgate.FieldPath{{"sensor", "value"}, {"@seq"}},
				Funcs: []iotgate.AggregateFunc{iotgate.AggAvg, iotgate.AggMin, iotgate.AggMax, iotgate.AggCount}}},
		{apiCase: apiCase{name: "ErrNoFields", target: base, status: http.StatusBadRequest, code: iotgate.EInvalid}},
		{apiCase: apiCase{name: "ErrEmptyKey", target: base + "?fields=a..b", status: http.StatusBadRequest, code: iotgate.EInvalid, message: "empty key"}},
		{apiCase: apiCase{name: "ErrTooManyFields", target: base + "?fields=" + manyFields(17), status: http.StatusBadRequest, code: iotgate.EInvalid}},
		{apiCase: apiCase{name: "ErrBadFn", target: base + "?fields=t&fn=median", status: http.StatusBadRequest, code: iotgate.EInvalid, message: "median"}},
		{apiCase: apiCase{name: "ErrBadEvery", target: base + "?fields=t&every=soon", status: http.StatusBadRequest, code: iotgate.EInvalid, message: "every"}},
		{apiCase: apiCase{name: "ErrSubSecond", target: base + "?fields=t&every=500ms", status: http.StatusBadRequest, code: iotgate.EInvalid, message: "every"}},
		{apiCase: apiCase{name: "ErrBadFill", target: base + "?fields=t&fill=zero", status: http.StatusBadRequest, code: iotgate.EInvalid}},
		{apiCase: apiCase{name: "ErrToBeforeFrom", target: base + "?fields=t&from=2026-01-03T00:00:00Z&to=2026-01-02T00:00:00Z", status: http.StatusBadRequest, code: iotgate.EInvalid}},
		{apiCase: apiCase{name: "ErrTooManyBuckets", target: base + "?fields=t&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&every=1m", status: http.StatusUnprocessableEntity, code: iotgate.DetailTooManyBuckets}},
		{apiCase: apiCase{name: "ErrTooManyBucketsFarApart", target: base + "?fields=t&from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z&every=24h", status: http.StatusUnprocessableEntity, code: iotgate.DetailTooManyBuckets}},
		{apiCase: apiCase{name: "ErrUnknownDevice", target: "/v1/devices/nobody%40example.com/readings/aggregate?fields=t", status: http.StatusNotFound, code: iotgate.ENotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := newDeviceFixture()
			start := time.Now().UTC()
			tt.run(t, newAPI(t, nil, svc))
			if tt.want == nil {
				return
			}
			got := svc.lastAggregate
			if tt.want.To.IsZero() {
				if got.To.Before(start.Add(-time.Second)) || got.To.After(time.Now()) || !got.From.Equal(got.To.Add(-DefaultAggregateRange)) {
					t.Errorf("from, to = %s, %s; want the last 24h", got.From, got.To)
				}
				tt.want.From, tt.want.To = got.From, got.To
			}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(tt.want)
			if string(gj) != string(wj) {
				t.Errorf("query = %s\nwant    %s", gj, wj)
			}
		})
	}
}

// manyFields returns n distinct field names, comma-separated.
func manyFields(n int) string {
	fs := make([]string, n)
	for i := range fs {
		fs[i] = "f" + strconv.Itoa(i)
	}
	return strings.Join(fs, ",")
}

func TestAggregateQueryBuckets(t *testing.T) {
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	for _, tt := range []struct {
		name     string
		from, to string
		every    time.Duration
		want     int64
	}{
		{"Aligned", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", time.Hour, 24},
		{"Unaligned", "2026-01-02T00:30:00Z", "2026-01-02T02:10:00Z", time.Hour, 3},
		{"OneSecond", "2026-01-02T00:00:00Z", "2026-01-02T00:00:01Z", time.Hour, 1},
		{"BeforeEpoch", "1969-12-31T23:30:00Z", "1970-01-01T00:30:00Z", time.Hour, 2},
		{"EndOnBoundary", "2026-01-02T00:00:00Z", "2026-01-02T01:00:00Z", time.Hour, 1},
		{"YearsOneTo9999", "0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z", 24 * time.Hour, 3652058},
		{"SubSecondEnd", "2026-01-02T00:00:00Z", "2026-01-02T00:00:00.5Z", time.Second, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := iotgate.AggregateQuery{From: at(tt.from), To: at(tt.to), Every: tt.every}
			if got := q.Buckets(); got != tt.want {
				t.Errorf("Buckets() = %d, want %d", got, tt.want)
			}
		})
	}
}

// FuzzAggregateQuery: whatever the query string, the aggregate query is
// refused or within its bounds.
func FuzzAggregateQuery(f *testing.F) {
	for _, s := range []string{
		"fields=temperature", "fields=a,b&every=1h&fn=avg,sum&fill=null",
		"fields=t&from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z&every=24h",
		"fields=t&every=-5m", "fields=a..b", "fields=t&every=1h30m0.5s",
	} {
		f.Add(s)
	}
	e := echo.New()
	e.Validator = newValidator()
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		req := httptest.NewRequest(http.MethodGet, "/?x=1", nil)
		req.URL.RawQuery = raw
		q, err := aggregateQueryOf(e.NewContext(req, httptest.NewRecorder()), now)
		if err != nil {
			if c := iotgate.ErrorCode(err); c != iotgate.EInvalid && c != iotgate.EUnprocessable && c != iotgate.EInternal {
				t.Fatalf("%q: error %v", raw, err)
			}
			return
		}
		if n := q.Buckets(); n < 1 || n > iotgate.MaxAggregateBuckets || q.Every < time.Second || len(q.Fields) == 0 ||
			len(q.Fields) > iotgate.MaxAggregateFields || len(q.Funcs) == 0 || !q.To.After(q.From) {
			t.Fatalf("%q: accepted %+v (%d buckets)", raw, q, n)
		}
	})
}
