package iotgate

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// AggregateFunc is an aggregate of a numeric field over a time bucket.
type AggregateFunc string

// The aggregates of a bucket. Count is how many readings of the bucket
// have a number at the field.
const (
	AggAvg   AggregateFunc = "avg"
	AggMin   AggregateFunc = "min"
	AggMax   AggregateFunc = "max"
	AggSum   AggregateFunc = "sum"
	AggCount AggregateFunc = "count"
)

// AggregateFuncs are the valid AggregateFunc values, in the order the
// API documents them.
var AggregateFuncs = []AggregateFunc{AggAvg, AggMin, AggMax, AggSum, AggCount}

// Bounds of an aggregate query: what one request may cost.
const (
	// MaxAggregateBuckets bounds the buckets of one query ((to-from)/every).
	MaxAggregateBuckets = 10000
	// MaxAggregateFields bounds the fields of one query.
	MaxAggregateFields = 16
	// MinAggregateEvery is the smallest bucket width.
	MinAggregateEvery = time.Second
	// MaxFieldPathLen bounds a field path's length in bytes.
	MaxFieldPathLen = 256
	// MaxFieldPathDepth bounds a field path's keys.
	MaxFieldPathDepth = 16
)

// Details of the aggregate query's refusals.
const (
	DetailFieldNotNumeric = "field_not_numeric" // a field the schema does not type as a single number (422)
	DetailFieldUnknown    = "field_unknown"     // a field the device's schema does not have (422)
	DetailTooManyBuckets  = "too_many_buckets"  // (to-from)/every over MaxAggregateBuckets (422)
)

// FieldPath is the path of a field in a reading's JSON data: its keys from
// the top. It is written with dots: "temperature", "@unit" (an attribute),
// "sensor.value", "note.#text" (simple content).
type FieldPath []string

// ParseFieldPath reads a dotted field path. Keys are the JSON keys as
// rendered (element local names, "@" and an attribute's local name, or
// "#text"); an XML name holding a dot can't be addressed. Errors: invalid.
func ParseFieldPath(s string) (FieldPath, error) {
	if s == "" || len(s) > MaxFieldPathLen {
		return nil, Errorf(EInvalid, "field path must be 1 to %d bytes", MaxFieldPathLen)
	}
	p := strings.Split(s, ".")
	if len(p) > MaxFieldPathDepth {
		return nil, Errorf(EInvalid, "field path %q has more than %d keys", s, MaxFieldPathDepth)
	}
	for _, k := range p {
		if k == "" {
			return nil, Errorf(EInvalid, "field path %q has an empty key", s)
		}
	}
	return p, nil
}

// String returns the path in dotted form.
func (p FieldPath) String() string { return strings.Join(p, ".") }

// AggregateQuery asks for aggregates of numeric fields of a device's
// readings over time buckets.
type AggregateQuery struct {
	// From and To bound received_at: From <= received_at < To.
	From, To time.Time
	// Every is the buckets' width; buckets are aligned to it from the
	// Unix epoch (a bucket starts at a multiple of Every).
	Every  time.Duration
	Fields []FieldPath
	Funcs  []AggregateFunc
	// Fill returns empty buckets too, with null aggregates (and count 0).
	Fill bool
}

// Buckets returns how many buckets q spans. It counts in seconds (Every
// is whole seconds once valid; a shorter one counts as 1s): nanoseconds
// since the epoch overflow int64 outside 1678-2262, and a client may ask
// for the year 1 to 9999, where a wrong count would let a fill of
// billions of buckets through.
func (q AggregateQuery) Buckets() int64 {
	if !q.To.After(q.From) {
		return 0
	}
	every := max(int64(q.Every/time.Second), 1)
	first := q.From.Unix() - mod(q.From.Unix(), every)
	end := q.To.Unix() // the last second holding a moment of [From, To)
	if q.To.Nanosecond() == 0 {
		end--
	}
	return (end-first)/every + 1
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// Validate checks q's bounds. Errors: invalid (shape), unprocessable with
// DetailTooManyBuckets.
func (q AggregateQuery) Validate() error {
	switch {
	case !q.To.After(q.From):
		return Errorf(EInvalid, "to must be after from")
	case q.Every < MinAggregateEvery || q.Every%time.Second != 0:
		return Errorf(EInvalid, "every must be a whole number of seconds, at least 1s")
	case len(q.Fields) == 0 || len(q.Fields) > MaxAggregateFields:
		return Errorf(EInvalid, "fields must name 1 to %d fields", MaxAggregateFields)
	case len(q.Funcs) == 0:
		return Errorf(EInvalid, "fn must name at least one aggregate")
	}
	if n := q.Buckets(); n > MaxAggregateBuckets {
		return &Error{Code: EUnprocessable, Detail: DetailTooManyBuckets,
			Message: "from, to and every span " + strconv.FormatInt(n, 10) + " buckets; at most " + strconv.Itoa(MaxAggregateBuckets) + " (widen every or narrow the range)"}
	}
	return nil
}

// AggregateBucket is one time bucket of an aggregate query.
type AggregateBucket struct {
	Start time.Time
	// Readings is how many readings the bucket holds.
	Readings int64
	// Values holds one row per field of the query and in it one value
	// per aggregate, in the query's orders; an empty value is null (no
	// number in the bucket).
	Values [][]json.Number
}
