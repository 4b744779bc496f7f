package devices

import (
	"bytes"
	"encoding/xml"

	"github.com/iotgate/iotgate"
)

// payloadValidator is implemented by schemas that can validate a payload
// without rendering it, which is cheaper.
type payloadValidator interface {
	// Validate validates a payload element. Errors: unprocessable.
	Validate(payload []byte) error
}

// validatePayload checks a command's payload against the device's schema.
// Errors: unprocessable, with the validator's reason, or with one of the
// details of plainXML.
func validatePayload(schema iotgate.PayloadSchema, payload []byte) error {
	if err := plainXML(payload); err != nil {
		return err
	}
	if v, ok := schema.(payloadValidator); ok {
		return v.Validate(payload)
	}
	_, err := schema.ValidateAndRender(payload)
	return err
}

// plainXML refuses comments, processing instructions and DOCTYPEs (or any
// other <!...> directive) in a command payload. The schema validator skips
// them, but an XMPP server closes the stream of a component that sends them
// (RFC 6120 11.1), which would cut every device off. The component drops
// them anyway (it re-serializes what it sends); refusing them here tells
// the client at once. An XML declaration at the very start is allowed, and
// so is CDATA: it is only text, and goes out escaped. What does not parse
// is left to the validator, which says where. Errors: unprocessable.
func plainXML(payload []byte) error {
	// Comments, processing instructions (the XML declaration too) and
	// directives all begin with "<!" or "<?", which nothing else in
	// well-formed XML contains (a '<' in text or an attribute value is
	// escaped; CDATA begins with "<!"): without either, there is none, and
	// the decoder, which costs more than the schema's check, is not run.
	if !bytes.Contains(payload, []byte("<!")) && !bytes.Contains(payload, []byte("<?")) {
		return nil
	}
	return plainXMLTokens(payload)
}

// plainXMLTokens is plainXML by reading every token of the payload.
func plainXMLTokens(payload []byte) error {
	d := xml.NewDecoder(bytes.NewReader(payload))
	d.Strict = true
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return nil
		}
		switch t := tok.(type) {
		case xml.Comment:
			return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailCommentForbidden, Message: "a command payload must not contain XML comments"}
		case xml.ProcInst:
			if t.Target == "xml" && len(bytes.TrimSpace(payload[:off])) == 0 {
				continue
			}
			return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailProcInstForbidden, Message: "a command payload must not contain processing instructions"}
		case xml.Directive:
			return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailDoctypeForbidden, Message: "a command payload must not contain a DOCTYPE or other <!...> declaration"}
		}
	}
}

// buildPayload builds a command's XML payload from its JSON data with the
// device's schema. Errors: those of iotgate.CommandBuilder; unprocessable
// for a schema that cannot build.
func buildPayload(schema iotgate.PayloadSchema, element string, data []byte) (string, error) {
	b, ok := schema.(iotgate.CommandBuilder)
	if !ok {
		return "", iotgate.Errorf(iotgate.EUnprocessable, "this device's schema cannot build commands from JSON: send payload (XML)")
	}
	doc, err := b.BuildCommand(element, data)
	if err != nil {
		return "", err
	}
	return string(doc), nil
}
