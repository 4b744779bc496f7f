package xsd

import (
	"encoding/json"
	"strings"
)

// typedValue converts text to the JSON value of its simple type: a number
// for numeric types, a bool for boolean, else the (whitespace-normalized)
// string. Text that is not a lexically valid value stays a string.
func typedValue(t *simpleType, s string) (string, jsonKind) {
	switch t.ws {
	case wsReplace:
		s = replaceSpace(s)
	case wsCollapse:
		s = collapseSpace(s)
	}
	switch t.kind {
	case kindNumber:
		if n, ok := jsonNumber(s); ok {
			return string(n), jsonNum
		}
	case kindBool:
		switch s {
		case "true", "1":
			return "true", jsonBool
		case "false", "0":
			return "false", jsonBool
		}
	}
	return s, jsonStr
}

type jsonKind uint8

const (
	jsonStr  jsonKind = iota
	jsonNum           // a canonical JSON number (jsonNumber)
	jsonBool          // true or false
)

// appendTyped appends the JSON of text s of simple type t (nil: a string).
func appendTyped(dst []byte, t *simpleType, s string) []byte {
	if t == nil {
		return AppendJSONString(dst, s)
	}
	v, k := typedValue(t, s)
	if k == jsonStr {
		return AppendJSONString(dst, v)
	}
	return append(dst, v...)
}

// jsonNumber converts an XSD decimal, integer, float or double lexical
// value into a JSON number, keeping every digit: "+1.50" -> 1.50,
// ".5" -> 0.5, "5." -> 5, "007" -> 7, "1E3" -> 1E3. INF, -INF and NaN have
// no JSON form: ok is false and they stay strings. So does a number that
// PostgreSQL's jsonb can't hold (see pgNumeric), such as the valid
// xs:double 1e-20000: stored as a number it would fail the reading's
// commit, and its batch with it.
func jsonNumber(s string) (json.Number, bool) {
	i, n := 0, len(s)
	neg := false
	if i < n && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	intStart := i
	for i < n && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intPart := s[intStart:i]
	frac := ""
	hasDot := false
	if i < n && s[i] == '.' {
		hasDot = true
		i++
		fs := i
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		frac = s[fs:i]
	}
	if intPart == "" && frac == "" {
		return "", false
	}
	exp := ""
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		es := i
		i++
		if i < n && (s[i] == '+' || s[i] == '-') {
			i++
		}
		ds := i
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == ds {
			return "", false
		}
		exp = s[es:i]
	}
	if i != n {
		return "", false
	}
	if !pgNumeric(intPart, frac, exp) {
		return "", false
	}
	trimmed := strings.TrimLeft(intPart, "0")
	if trimmed == "" {
		trimmed = "0"
	}
	// Fast path: already a canonical JSON number, no allocation.
	if s[0] != '+' && trimmed == intPart && (!hasDot || frac != "") {
		return json.Number(s), true
	}
	var b strings.Builder
	b.Grow(len(s) + 1)
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(trimmed)
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	b.WriteString(exp)
	return json.Number(b.String()), true
}

// PostgreSQL's numeric (which jsonb keeps numbers as) holds at most
// 131072 digits before the decimal point and 16383 after it, counting the
// digits as written: 1e-16383 fits, 1.0e-16383 and 10e-16384 do not.
const (
	pgMaxPower = 131071 // the highest power of ten of a digit
	pgMaxScale = 16383  // digits after the point
	// maxExpDigits bounds the exponents worth reading: PostgreSQL refuses
	// any beyond ±(2^31/2) whatever the digits.
	maxExpDigits = 9
)

// pgNumeric reports whether PostgreSQL 15's numeric accepts a number of
// these integer digits, fraction digits and exponent ("" or e/E, a sign
// and digits), checked against PostgreSQL itself in
// postgres (TestNumbersPostgresTakes).
func pgNumeric(intPart, frac, exp string) bool {
	e := 0
	if exp != "" {
		ds := exp[1:]
		neg := ds[0] == '-'
		if ds[0] == '+' || ds[0] == '-' {
			ds = ds[1:]
		}
		ds = strings.TrimLeft(ds, "0")
		if len(ds) > maxExpDigits {
			return false
		}
		for i := 0; i < len(ds); i++ {
			e = e*10 + int(ds[i]-'0')
		}
		if neg {
			e = -e
		}
	}
	if len(frac)-e > pgMaxScale {
		return false
	}
	// The power of ten of the first significant digit; a zero has none.
	if ip := strings.TrimLeft(intPart, "0"); ip != "" {
		return len(ip)-1+e <= pgMaxPower
	}
	if k := strings.IndexFunc(frac, func(r rune) bool { return r != '0' }); k >= 0 {
		return -(k+1)+e <= pgMaxPower
	}
	return true
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isXMLSpace(s[i]) {
			return false
		}
	}
	return true
}

func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isXMLSpace(s[i]) {
		i++
	}
	for j > i && isXMLSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

// replaceSpace is the XSD "replace" normalization: tab, CR, LF to space.
func replaceSpace(s string) string {
	if strings.IndexAny(s, "\t\r\n") < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// collapseSpace is the XSD "collapse" normalization: replace, then squeeze
// runs of spaces and trim.
func collapseSpace(s string) string {
	t := trimSpace(s)
	clean := true
	for i := 0; i < len(t); i++ {
		if c := t[i]; c != ' ' && isXMLSpace(c) || c == ' ' && i+1 < len(t) && t[i+1] == ' ' {
			clean = false
			break
		}
	}
	if clean {
		return t
	}
	var b strings.Builder
	b.Grow(len(t))
	space := false
	for i := 0; i < len(t); i++ {
		if isXMLSpace(t[i]) {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(t[i])
	}
	return b.String()
}

// normalizeAttr is XML attribute-value normalization of literal whitespace.
// encoding/xml has already resolved character references, so a "&#10;"
// becomes a space too here, where libxml2 would keep a newline.
func normalizeAttr(s string) string { return replaceSpace(s) }
