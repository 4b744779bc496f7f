package postgres

import "database/sql/driver"

// textArray is a PostgreSQL array literal of text items, what
// pq.Array([]string) sends, built for the big arrays of a batch of
// readings (their XML and JSON are most of its bytes): in one buffer
// sized up front, without copying each item to a []byte first, and from a
// json.RawMessage as well as a string, so that a reading's JSON need not
// be copied to a string first.
// No item may be NULL: the readings' columns are NOT NULL.
type textArray[T ~string | ~[]byte] []T

// Value implements driver.Valuer: {"item","it\"em"}, each item quoted,
// with '"' and '\' escaped by a backslash.
func (a textArray[T]) Value() (driver.Value, error) {
	if a == nil {
		return nil, nil
	}
	if len(a) == 0 {
		return "{}", nil
	}
	n := 1 + 3*len(a) // braces, quotes and commas
	for _, v := range a {
		n += len(v) + escapes(v)
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, v := range a {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		start := 0
		for j := 0; j < len(v); j++ {
			if c := v[j]; c == '"' || c == '\\' {
				b = append(b, v[start:j]...)
				b = append(b, '\\', c)
				start = j + 1
			}
		}
		b = append(b, v[start:]...)
		b = append(b, '"')
	}
	return string(append(b, '}')), nil
}

// escapes counts the bytes of v that an array literal escapes.
func escapes[T ~string | ~[]byte](v T) int {
	n := 0
	for j := 0; j < len(v); j++ {
		if c := v[j]; c == '"' || c == '\\' {
			n++
		}
	}
	return n
}
