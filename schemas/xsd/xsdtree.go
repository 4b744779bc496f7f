package xsd

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// xnode is an element of an XSD document in the XSD namespace (others, and
// annotations, are skipped when parsing).
type xnode struct {
	local string
	line  int
	attrs []xml.Attr // un-namespaced attributes
	scope *nsScope
	kids  []*xnode
	doc   *xdoc // the schema document it is in
}

// xdoc is what building JSON commands needs of a schema document: the
// namespace its local elements are in when they are qualified.
type xdoc struct {
	tns           string
	qualified     bool // elementFormDefault="qualified"
	attrQualified bool // attributeFormDefault="qualified"
}

// nsScope holds the namespace prefixes declared on one element, for
// resolving QName-valued attributes (type="tns:Foo").
type nsScope struct {
	parent *nsScope
	m      map[string]string
}

const xmlNS = "http://www.w3.org/XML/1998/namespace"

func (s *nsScope) lookup(prefix string) (string, bool) {
	if prefix == "xml" {
		return xmlNS, true
	}
	for ; s != nil; s = s.parent {
		if v, ok := s.m[prefix]; ok {
			return v, true
		}
	}
	return "", prefix == "" // no default namespace: unqualified
}

func (n *xnode) attr(name string) (string, bool) {
	for _, a := range n.attrs {
		if a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

func (n *xnode) child(local string) *xnode {
	for _, k := range n.kids {
		if k.local == local {
			return k
		}
	}
	return nil
}

// qname resolves a QName value in n's scope.
func (n *xnode) qname(v string) (qname, bool) {
	v = strings.TrimSpace(v)
	prefix, local, found := strings.Cut(v, ":")
	if !found {
		prefix, local = "", v
	}
	ns, ok := n.scope.lookup(prefix)
	return qname{ns, local}, ok && local != ""
}

// parseXSD parses an XSD document into its tree of XSD elements.
func parseXSD(src []byte) (*xnode, error) {
	d := xml.NewDecoder(bytes.NewReader(src))
	d.Strict = true
	d.CharsetReader = charsetReader
	var stack []*xnode
	var root *xnode
	scope := (*nsScope)(nil)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errors.New("DOCTYPE is not allowed")
		case xml.StartElement:
			if len(stack) == 0 && root != nil {
				return nil, errors.New("more than one root element")
			}
			if t.Name.Space != xsdNS || t.Name.Local == "annotation" {
				if len(stack) == 0 {
					return nil, fmt.Errorf("the root element must be xs:schema in namespace %s", xsdNS)
				}
				if err := d.Skip(); err != nil {
					return nil, err
				}
				continue
			}
			if len(stack) >= maxSchemaDepth {
				return nil, fmt.Errorf("schema nested deeper than %d elements", maxSchemaDepth)
			}
			line, _ := d.InputPos()
			n := &xnode{local: t.Name.Local, line: line, scope: scope}
			if len(stack) > 0 {
				n.doc = stack[0].doc
			}
			var decl map[string]string
			for _, a := range t.Attr {
				switch {
				case a.Name.Space == "xmlns":
					if decl == nil {
						decl = map[string]string{}
					}
					decl[a.Name.Local] = a.Value
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					if decl == nil {
						decl = map[string]string{}
					}
					decl[""] = a.Value
				case a.Name.Space == "":
					n.attrs = append(n.attrs, a)
				}
			}
			if decl != nil {
				n.scope = &nsScope{parent: scope, m: decl}
			}
			scope = n.scope
			if len(stack) == 0 {
				if n.local != "schema" {
					return nil, fmt.Errorf("the root element must be xs:schema in namespace %s", xsdNS)
				}
				root = n
				tns, _ := n.attr("targetNamespace")
				efd, _ := n.attr("elementFormDefault")
				afd, _ := n.attr("attributeFormDefault")
				n.doc = &xdoc{tns: tns, qualified: strings.TrimSpace(efd) == "qualified",
					attrQualified: strings.TrimSpace(afd) == "qualified"}
			} else {
				p := stack[len(stack)-1]
				p.kids = append(p.kids, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, errors.New("unexpected end element")
			}
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				scope = stack[len(stack)-1].scope
			} else {
				scope = nil
			}
		}
	}
	if root == nil {
		return nil, errors.New("no xs:schema element")
	}
	return root, nil
}
