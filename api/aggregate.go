package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// Defaults of the aggregate query.
const (
	// DefaultAggregateRange is how far back from defaults to when the
	// query has no from.
	DefaultAggregateRange = 24 * time.Hour
	// DefaultAggregateEvery is the bucket width when the query has no
	// every.
	DefaultAggregateEvery = 5 * time.Minute
	// DefaultAggregateFn are the aggregates when the query has no fn.
	DefaultAggregateFn = "avg,min,max,count"
)

// AggregateResponse is the answer of GET
// /v1/devices/{jid}/readings/aggregate.
type AggregateResponse struct {
	// From and To are the range the buckets cover (from <= received_at <
	// to), as asked for or defaulted.
	From time.Time `json:"from" format:"date-time" example:"2026-01-02T00:00:00Z"`
	To   time.Time `json:"to" format:"date-time" example:"2026-01-03T00:00:00Z"`
	// EverySeconds is the buckets' width.
	EverySeconds int64 `json:"every_seconds" example:"300"`
	// Fields and Fn are the fields and aggregates of each bucket's values.
	Fields []string `json:"fields" example:"temperature,humidity"`
	Fn     []string `json:"fn" example:"avg,min,max,count"`
	// Buckets are oldest first; without fill=null, only the buckets that
	// hold readings.
	Buckets []AggregateBucket `json:"buckets"`
}

// AggregateBucket is one time bucket.
type AggregateBucket struct {
	// Start is the bucket's start, a multiple of every from the Unix
	// epoch; the bucket ends where the next starts.
	Start time.Time `json:"start" format:"date-time" example:"2026-01-02T16:05:00Z"`
	// Readings is how many readings the bucket holds.
	Readings int64 `json:"readings" example:"30"`
	// Values are by field, then by aggregate, for example
	// {"temperature": {"avg": 21.4, "min": 21.1, "max": 21.8, "count": 30}};
	// null where the bucket has no number for the field (count is then 0).
	Values map[string]map[string]*json.Number `json:"values" swaggertype:"object"`
}

// aggregateQuery is the query of the aggregate route, parsed by
// parseQuery.
type aggregateQuery struct {
	From   *time.Time `query:"from"`
	To     *time.Time `query:"to"`
	Every  string     `query:"every" validate:"max=32"`
	Fields string     `query:"fields" validate:"required,max=4096"`
	Fn     string     `query:"fn" validate:"max=256"`
	Fill   string     `query:"fill" validate:"oneof=none null"`
}

// aggregate answers time buckets of a device's readings with aggregates
// of numeric fields.
//
//	@Summary		Aggregate a device's readings over time buckets
//	@Description	Returns time buckets of the device's readings (from <= received_at < to) with aggregates of numeric fields, for charts, computed by PostgreSQL in one query. Buckets are aligned to every from the Unix epoch (every=1h: buckets start on the hour, UTC). A field is a dotted path of the JSON keys of the readings' data: temperature, @seq (an attribute), sensor.value (a child's child), note.#text (simple content); it must be a single number by the device's schema (its XSD type: decimal, double, float or an integer type), else 422 field_unknown or field_not_numeric, with the field in details. Readings whose value at a field is not a JSON number (stored under another schema version) are skipped for that field. Bounded: at most 10000 buckets ((to-from)/every, else 422 too_many_buckets), 16 fields, every at least 1s; counted as a heavy request.
//	@Tags			devices
//	@Produce		json
//	@Param			jid		path		string	true	"Bare JID, URL-escaped"													extensions(x-example=thermo1@example.com)
//	@Param			fields	query		string	true	"Comma-separated dotted field paths, e.g. temperature,humidity"
//	@Param			from	query		string	false	"Start (RFC 3339; escape + as %2B); default: to minus 24h"				format(date-time)	extensions(x-example=2026-01-02T00:00:00Z)
//	@Param			to		query		string	false	"End, excluded (RFC 3339; escape + as %2B); default: now"				format(date-time)	extensions(x-example=2026-01-03T00:00:00Z)
//	@Param			every	query		string	false	"Bucket width, a Go duration in whole seconds (30s, 5m, 1h, 24h)"		default(5m)
//	@Param			fn		query		string	false	"Comma-separated aggregates: avg, min, max, sum, count"					default(avg,min,max,count)
//	@Param			fill	query		string	false	"none leaves empty buckets out; null returns them with null values"	Enums(none, null)	default(none)
//	@Success		200		{object}	api.AggregateResponse
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"Not a valid bare JID, or a bad from, to, every, fields or fn"
//	@Failure		404		{object}	api.ErrorResponse							"No such device"
//	@Failure		422		{object}	api.ErrorResponse							"A field not in the schema (field_unknown) or not a single number (field_not_numeric), or too many buckets (too_many_buckets)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Failure		504		{object}	api.ErrorResponse	"The query took longer than 10s"
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited), or it (or the server) has too many heavy requests in progress (code too_many_concurrent)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid}/readings/aggregate [get]
func (h *deviceHandler) aggregate(c echo.Context) error {
	jid, err := h.jid(c)
	if err != nil {
		return err
	}
	q, err := aggregateQueryOf(c, time.Now())
	if err != nil {
		return err
	}
	if err := visible(c, h.svc, jid); err != nil {
		return err
	}
	bs, err := h.svc.Aggregate(c.Request().Context(), jid, q)
	if err != nil {
		return fmt.Errorf("aggregate readings: %w", err)
	}
	resp := AggregateResponse{From: q.From, To: q.To, EverySeconds: int64(q.Every / time.Second),
		Fields: make([]string, len(q.Fields)), Fn: make([]string, len(q.Funcs)), Buckets: make([]AggregateBucket, 0, len(bs))}
	for i, f := range q.Fields {
		resp.Fields[i] = f.String()
	}
	for i, fn := range q.Funcs {
		resp.Fn[i] = string(fn)
	}
	for _, b := range bs {
		ab := AggregateBucket{Start: b.Start, Readings: b.Readings, Values: make(map[string]map[string]*json.Number, len(q.Fields))}
		for i, row := range b.Values {
			m := make(map[string]*json.Number, len(row))
			for j, v := range row {
				if v != "" {
					m[resp.Fn[j]] = &v
				} else if q.Funcs[j] == iotgate.AggCount {
					zero := json.Number("0")
					m[resp.Fn[j]] = &zero
				} else {
					m[resp.Fn[j]] = nil
				}
			}
			ab.Values[resp.Fields[i]] = m
		}
		resp.Buckets = append(resp.Buckets, ab)
	}
	return c.JSON(200, resp)
}

// aggregateQueryOf parses and checks the aggregate query; now defaults
// to. Errors: invalid, unprocessable (too_many_buckets).
func aggregateQueryOf(c echo.Context, now time.Time) (iotgate.AggregateQuery, error) {
	raw := aggregateQuery{Fn: DefaultAggregateFn, Fill: "none"}
	if err := parseQuery(c, &raw); err != nil {
		return iotgate.AggregateQuery{}, err
	}
	q := iotgate.AggregateQuery{Every: DefaultAggregateEvery, Fill: raw.Fill == "null"}
	q.To = now.UTC().Truncate(time.Microsecond)
	if raw.To != nil {
		q.To = raw.To.UTC()
	}
	q.From = q.To.Add(-DefaultAggregateRange)
	if raw.From != nil {
		q.From = raw.From.UTC()
	}
	if raw.Every != "" {
		d, err := time.ParseDuration(raw.Every)
		if err != nil {
			return q, iotgate.Errorf(iotgate.EInvalid, "every must be a duration such as 30s, 5m or 1h, not %q", raw.Every)
		}
		q.Every = d
	}
	seen := map[string]bool{}
	for _, s := range strings.Split(raw.Fields, ",") {
		s = strings.TrimSpace(s)
		if seen[s] {
			continue
		}
		seen[s] = true
		p, err := iotgate.ParseFieldPath(s)
		if err != nil {
			return q, err
		}
		if len(q.Fields) == iotgate.MaxAggregateFields {
			return q, iotgate.Errorf(iotgate.EInvalid, "fields names more than %d fields", iotgate.MaxAggregateFields)
		}
		q.Fields = append(q.Fields, p)
	}
	seenFn := map[iotgate.AggregateFunc]bool{}
	for _, s := range strings.Split(raw.Fn, ",") {
		fn := iotgate.AggregateFunc(strings.TrimSpace(s))
		known := false
		for _, k := range iotgate.AggregateFuncs {
			known = known || k == fn
		}
		if !known {
			return q, iotgate.Errorf(iotgate.EInvalid, "fn %q is not one of avg, min, max, sum, count", fn)
		}
		if !seenFn[fn] {
			seenFn[fn] = true
			q.Funcs = append(q.Funcs, fn)
		}
	}
	return q, q.Validate()
}
