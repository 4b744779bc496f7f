package postgres

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
)

// StoredJSON returns the JSON value data as PostgreSQL prints it once
// stored in a jsonb column (jsonb::text, what a page of readings read
// from the store holds): object keys ordered by length and then
// bytewise, ", " and ": " between tokens, strings escaped as PostgreSQL's
// escape_json does (only ", \, and control characters; everything else,
// \u escapes included, as plain UTF-8), numbers as numeric prints them
// (no exponent, the scale kept: 1.50e1 is 15.0, -0 is 0).
//
// It lets the device service keep a reading it just committed in the
// form a page read back from PostgreSQL would show, byte for byte,
// without reading it back. ok is false for what it does not follow
// exactly (a repeated key, an exponent beyond ±1000, more than 1000
// digits, invalid JSON): the caller then reads the store instead.
func StoredJSON(data []byte) (out []byte, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return appendJSONB(make([]byte, 0, len(data)+len(data)/4), v)
}

// maxJSONBDepth bounds the nesting StoredJSON follows (PostgreSQL's own
// limit is its stack depth; readings are far shallower).
const maxJSONBDepth = 256

type jsonbPair struct {
	key string
	val any
}

// decodeValue reads one value: string, json.Number, bool, nil, []any or
// []jsonbPair (an object, keys in document order).
func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxJSONBDepth {
		return nil, errJSONB
	}
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return arr, nil
		case '{':
			obj := []jsonbPair{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := k.(string)
				if !ok {
					return nil, errJSONB
				}
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				obj = append(obj, jsonbPair{key, v})
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return obj, nil
		}
		return nil, errJSONB
	default:
		return t, nil
	}
}

type jsonbError struct{}

func (jsonbError) Error() string { return "not followed" }

var errJSONB error = jsonbError{}

func appendJSONB(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), true
	case bool:
		if v {
			return append(b, "true"...), true
		}
		return append(b, "false"...), true
	case string:
		return appendJSONBString(b, v), true
	case json.Number:
		return appendNumeric(b, string(v))
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ", "...)
			}
			var ok bool
			if b, ok = appendJSONB(b, e); !ok {
				return nil, false
			}
		}
		return append(b, ']'), true
	case []jsonbPair:
		// jsonb's order: shorter keys first, then bytewise.
		slices.SortStableFunc(v, func(x, y jsonbPair) int {
			if len(x.key) != len(y.key) {
				return len(x.key) - len(y.key)
			}
			return strings.Compare(x.key, y.key)
		})
		b = append(b, '{')
		for i, p := range v {
			if i > 0 {
				if v[i-1].key == p.key {
					return nil, false // jsonb keeps the last: not followed
				}
				b = append(b, ", "...)
			}
			b = appendJSONBString(b, p.key)
			b = append(b, ": "...)
			var ok bool
			if b, ok = appendJSONB(b, p.val); !ok {
				return nil, false
			}
		}
		return append(b, '}'), true
	}
	return nil, false
}

// appendJSONBString appends s quoted as PostgreSQL's escape_json does.
func appendJSONBString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		default:
			if c < ' ' {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

// appendNumeric appends the JSON number n as PostgreSQL's numeric_out
// prints numeric_in's reading of it.
func appendNumeric(b []byte, n string) ([]byte, bool) {
	neg := strings.HasPrefix(n, "-")
	n = strings.TrimPrefix(n, "-")
	mant, exp := n, 0
	if i := strings.IndexAny(n, "eE"); i >= 0 {
		mant = n[:i]
		e := n[i+1:]
		sign := 1
		switch {
		case strings.HasPrefix(e, "+"):
			e = e[1:]
		case strings.HasPrefix(e, "-"):
			sign, e = -1, e[1:]
		}
		if e == "" || len(e) > 4 {
			return nil, false
		}
		for _, c := range []byte(e) {
			if c < '0' || c > '9' {
				return nil, false
			}
			exp = exp*10 + int(c-'0')
		}
		exp *= sign
		if exp > 1000 || exp < -1000 {
			return nil, false
		}
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := intPart + frac
	if digits == "" || len(digits) > 1000 {
		return nil, false
	}
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return nil, false
		}
	}
	// The value is digits × 10^(exp-len(frac)); numeric keeps
	// len(frac)-exp digits after the point (none if negative).
	scale := max(0, len(frac)-exp)
	point := len(intPart) + exp // where the point falls in digits
	var ip, fp string
	switch {
	case point <= 0:
		ip, fp = "", strings.Repeat("0", -point)+digits
	case point >= len(digits):
		ip, fp = digits+strings.Repeat("0", point-len(digits)), ""
	default:
		ip, fp = digits[:point], digits[point:]
	}
	if len(fp) < scale {
		fp += strings.Repeat("0", scale-len(fp))
	}
	fp = fp[:scale] // the digits beyond are the zeros the exponent shifted in
	ip = strings.TrimLeft(ip, "0")
	if ip == "" {
		ip = "0"
	}
	// What is written must be read back: no more digits than are read
	// (1e1000 would be written with 1001).
	if len(ip)+len(fp) > 1000 {
		return nil, false
	}
	if neg && strings.Trim(ip+fp, "0") != "" {
		b = append(b, '-')
	}
	b = append(b, ip...)
	if scale > 0 {
		b = append(b, '.')
		b = append(b, fp...)
	}
	return b, true
}
