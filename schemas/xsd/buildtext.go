package xsd

// The text side of Build: turning JSON values into the lexical forms of
// simple types, and escaping them.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// text writes v as text of simple type t.
func (b *jbuilder) text(t *simpleType, v any, path string) error {
	lex, err := b.lexical(t, v, path)
	if err != nil {
		return err
	}
	b.out = appendEscaped(b.out, lex, false)
	return nil
}

// lexical returns the lexical form of v in simple type t, refusing what
// Render would not give back as v.
func (b *jbuilder) lexical(t *simpleType, v any, path string) (string, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		if t.kind != kindNumber {
			return "", b.fail(path, "expected "+kindName(t.kind)+", not a number")
		}
		if n, ok := jsonNumber(string(x)); !ok || string(n) != string(x) {
			return "", b.fail(path, "number out of the range iotgate stores")
		}
		return string(x), nil
	case bool:
		if t.kind != kindBool {
			return "", b.fail(path, "expected "+kindName(t.kind)+", not a boolean")
		}
		return strconv.FormatBool(x), nil
	case string:
		s = x
		// Render gives a string for a number only for INF, -INF, NaN and
		// numbers too large for PostgreSQL, and never for a valid boolean:
		// any other string is the wrong type.
		if t.kind == kindBool || t.kind == kindNumber && !numberString(s) {
			return "", b.fail(path, "expected "+kindName(t.kind)+", not a string")
		}
	default:
		return "", b.fail(path, "expected "+kindName(t.kind)+", not "+jsonTypeName(v))
	}
	if !validXMLChars(s) {
		return "", b.fail(path, "holds a character XML does not allow")
	}
	// A string must be what Render gives back: already normalized, and
	// not a number or boolean for those types (send those as JSON).
	if got, k := typedValue(t, s); got != s || k != jsonStr {
		if k != jsonStr {
			return "", b.fail(path, "expected "+kindName(t.kind)+": send it as a JSON "+kindName(t.kind)+", not a string")
		}
		return "", b.fail(path, "not in the whitespace-normalized form of its type (its value would be "+strconv.Quote(got)+")")
	}
	return s, nil
}

func kindName(k valueKind) string {
	switch k {
	case kindNumber:
		return "number"
	case kindBool:
		return "boolean"
	}
	return "string"
}

func jsonTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// validXMLChars reports whether s is valid UTF-8 made of XML 1.0 Chars.
func validXMLChars(s string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return false
		}
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case r < 0x20, r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF:
			return false
		}
		i += n
	}
	return true
}

// appendEscaped escapes s as XML text or, if attr, as an attribute value.
// Carriage returns are written as references, which XML parsers keep (a
// literal one would become a line feed).
func appendEscaped(dst []byte, s string, attr bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '<':
			dst = append(dst, "&lt;"...)
		case '>':
			dst = append(dst, "&gt;"...)
		case '&':
			dst = append(dst, "&amp;"...)
		case '\r':
			dst = append(dst, "&#xD;"...)
		case '"':
			if attr {
				dst = append(dst, "&quot;"...)
			} else {
				dst = append(dst, c)
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// numberString reports whether s, a string for a numeric type, may be a
// valid value Render gives as a string: INF, -INF, NaN or digits.
func numberString(s string) bool {
	switch s {
	case "INF", "-INF", "NaN", "+INF":
		return true
	}
	return s != "" && strings.Trim(s, "0123456789+-.eE") == ""
}
