package xsd

import (
	"errors"
)

// The flattened document: libxml.c (iot_flatten) writes the tree libxml2
// parsed and validated as a stream of records, so that rendering on the
// ingest path needs one cgo call and one copy instead of a second parse or
// a cgo call per node. Strings are a uvarint length and UTF-8 bytes.
//
//	fNS    uri          defines the next namespace id (1, 2, ...; 0 = none)
//	fStart nsid name    opens an element; its fAttr records follow
//	fAttr  nsid name value
//	fText  text
//	fEnd                closes the current element
const (
	fStart = 1
	fAttr  = 2
	fText  = 3
	fEnd   = 4
	fNS    = 5
)

var errFlat = errors.New("xsd: corrupt flattened document")

type flatReader struct {
	s   string
	i   int
	err error
}

func (r *flatReader) uvarint() int {
	var x uint64
	var shift uint
	for r.i < len(r.s) {
		b := r.s[r.i]
		r.i++
		if b < 0x80 {
			if shift > 35 {
				break
			}
			return int(x | uint64(b)<<shift)
		}
		x |= uint64(b&0x7f) << shift
		shift += 7
	}
	r.err = errFlat
	return 0
}

func (r *flatReader) str() string {
	n := r.uvarint()
	if r.err != nil || n < 0 || n > len(r.s)-r.i {
		r.err = errFlat
		return ""
	}
	v := r.s[r.i : r.i+n] // shares the one string copied out of C
	r.i += n
	return v
}

type flatAttr struct{ ns, name, value string }

// walkFlat feeds a flattened document to r.
func walkFlat(s string, r events) error {
	fr := flatReader{s: s}
	var nsBuf [4]string
	nss := nsBuf[:1]
	ns := func(id int) string {
		if id < 0 || id >= len(nss) {
			fr.err = errFlat
			return ""
		}
		return nss[id]
	}
	var attrBuf [8]flatAttr
	attrs := attrBuf[:0]
	for fr.i < len(fr.s) && fr.err == nil {
		op := fr.s[fr.i]
		fr.i++
		switch op {
		case fNS:
			nss = append(nss, fr.str())
		case fStart:
			id := fr.uvarint()
			r.start(ns(id), fr.str())
			// Gather the attributes: xsi:* go first, as xsi:type changes
			// how the others are typed.
			attrs = attrs[:0]
			for fr.err == nil && fr.i < len(fr.s) && fr.s[fr.i] == fAttr {
				fr.i++
				a := flatAttr{ns: ns(fr.uvarint())}
				a.name = fr.str()
				a.value = fr.str()
				if a.ns == xsiNS {
					r.attr(a.ns, a.name, a.value)
				} else {
					attrs = append(attrs, a)
				}
			}
			for _, a := range attrs {
				r.attr(a.ns, a.name, a.value)
			}
		case fText:
			t := fr.str()
			if r.depth() == 0 {
				fr.err = errFlat
				break
			}
			r.text(t)
		case fEnd:
			if r.depth() == 0 {
				fr.err = errFlat
				break
			}
			r.end()
		default:
			fr.err = errFlat
		}
	}
	return fr.err
}
