package devices

import (
	"context"
	"time"

	"github.com/iotgate/iotgate"
)

// AggregateTimeout bounds one aggregate query in the database.
const AggregateTimeout = 10 * time.Second

// FieldKinder is what Aggregate needs of a compiled schema beyond
// PayloadSchema: the JSON kind of a field of its renderings ("number",
// "string", "boolean", "object", "array" or "unknown").
type FieldKinder interface {
	FieldKind(path []string) string
}

// Aggregate returns time buckets of a device's readings with aggregates
// of numeric fields, computed by the store in one query. Each field must
// be a single number by the device's schema version (its type, from the
// XSD); q is checked (Validate) here too. Errors: invalid (bad JID or
// query), not_found, unprocessable (DetailFieldUnknown,
// DetailFieldNotNumeric, DetailTooManyBuckets), unavailable, timeout.
func (s *Service) Aggregate(ctx context.Context, jid string, q iotgate.AggregateQuery) ([]iotgate.AggregateBucket, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	if err := q.Validate(); err != nil {
		return nil, err
	}
	ps, _, err := s.schemas.Compiled(ctx, d.Schema, d.SchemaVersion)
	if err != nil {
		return nil, err
	}
	fk, _ := ps.(FieldKinder)
	for _, f := range q.Fields {
		kind := "unknown"
		if fk != nil {
			kind = fk.FieldKind(f)
		}
		switch kind {
		case "number":
		case "unknown":
			return nil, &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailFieldUnknown,
				Message: "field " + f.String() + " is not in schema " + d.Schema + " (dotted JSON keys of the reading's data, e.g. temperature, @seq, sensor.value)",
				Fields:  map[string]string{"field": f.String()}}
		default:
			return nil, &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailFieldNotNumeric,
				Message: "field " + f.String() + " is not numeric in schema " + d.Schema + " (it is " + kindPhrase(kind) + ")",
				Fields:  map[string]string{"field": f.String(), "kind": kind}}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, AggregateTimeout)
	defer cancel()
	return s.store.AggregateReadings(ctx, d.JID, q)
}

func kindPhrase(kind string) string {
	switch kind {
	case "array":
		return "repeated: an array"
	case "object":
		return "an object"
	}
	return "a " + kind
}

// MaxReadingFields bounds the fields ReadingFields returns: the columns
// of a CSV export.
const MaxReadingFields = 1000

// FieldLister is what ReadingFields needs of a compiled schema: the
// paths of its renderings' scalar fields, sorted.
type FieldLister interface {
	ScalarFields(depth, max int) [][]string
}

// ReadingFields returns the paths of every scalar field (number, string,
// boolean; not repeated) that the device's schema version gives its
// readings' data, sorted, at most MaxReadingFields of depth at most
// iotgate.MaxFieldPathDepth: the columns of a table of its readings.
// Errors: invalid, not_found, unavailable.
func (s *Service) ReadingFields(ctx context.Context, jid string) ([]iotgate.FieldPath, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	ps, _, err := s.schemas.Compiled(ctx, d.Schema, d.SchemaVersion)
	if err != nil {
		return nil, err
	}
	fl, ok := ps.(FieldLister)
	if !ok {
		return nil, nil
	}
	paths := fl.ScalarFields(iotgate.MaxFieldPathDepth, MaxReadingFields)
	out := make([]iotgate.FieldPath, len(paths))
	for i, p := range paths {
		out[i] = p
	}
	return out, nil
}
