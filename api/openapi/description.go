package openapi

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/swaggo/swag"
)

// Description is the description iotgate serves at /swagger/doc.json: the
// one docs.go registers with swag, without the "host" that swag's template
// always writes, empty when no @host annotation is set. Swagger 2.0 allows
// a host name there or no host at all, which means "the host that serves
// this description": iotgate can't know the name its clients reach it by,
// so it says nothing, and strict validators (and the client generators that
// run them first) accept the document.
//
// It is computed once; the error is swag's or encoding/json's and can only
// come from a broken docs.go, which the tests of this package catch.
func Description() ([]byte, error) { return description() }

var description = sync.OnceValues(func() ([]byte, error) {
	s, err := swag.ReadDoc(SwaggerInfo.InstanceName())
	if err != nil {
		return nil, fmt.Errorf("read the registered description: %w", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		return nil, fmt.Errorf("decode the registered description: %w", err)
	}
	if host, ok := doc["host"]; ok {
		var h string
		if err := json.Unmarshal(host, &h); err == nil && h == "" {
			delete(doc, "host")
		}
	}
	b, err := json.MarshalIndent(doc, "", "    ")
	if err != nil {
		return nil, fmt.Errorf("encode the description: %w", err)
	}
	return b, nil
})
