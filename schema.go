package iotgate

import (
	"context"
	"encoding/json"
)

// PayloadSchema is a compiled device schema, as ingest needs it.
type PayloadSchema interface {
	// TargetNamespace is the namespace a reading's payload element is in.
	TargetNamespace() string
	// ValidateAndRender validates a payload element and returns its JSON
	// rendering. Errors: unprocessable, with the validator's reason.
	ValidateAndRender(payload []byte) (json.RawMessage, error)
}

// CommandBuilder is implemented by payload schemas that can build a
// command's XML from JSON, the inverse of a reading's rendering.
type CommandBuilder interface {
	// BuildCommand returns the XML of the schema's global element named
	// element ("" picks the one data fits) from data, its JSON rendering.
	// The result still has to be validated. Errors: unprocessable, with
	// detail json_not_mappable (Fields: a MappingIssue),
	// json_element_ambiguous or json_element_unknown.
	BuildCommand(element string, data []byte) ([]byte, error)
}

// MappingIssue says which key of a command's JSON data has no XML form
// in the schema, and why.
type MappingIssue struct {
	// Path is the key's JSON path, from the request body ("data.target",
	// "data.sensor[1].@id"), or "element".
	Path   string `json:"path" example:"data.target"`
	Reason string `json:"reason" example:"expected number, not a string"`
}

// SchemaSource resolves schema names and versions to compiled schemas.
type SchemaSource interface {
	// Compiled returns the compiled schema; version 0 means the latest.
	// Errors: not_found.
	Compiled(ctx context.Context, name string, version int) (PayloadSchema, int, error)
}

// Details of the schema registry's refusals (see detail.go for the others).
const (
	// DetailSchemaInUse: a schema version devices or other schema
	// versions (by xs:import) use cannot be deleted.
	DetailSchemaInUse = "schema_in_use"
	// DetailSchemaQuotaExceeded: as many schema versions are registered
	// as the registry holds (IOTGATE_MAX_SCHEMA_VERSIONS).
	DetailSchemaQuotaExceeded = "schema_quota_exceeded"
	// DetailSchemaWriteRate: the token's schema writes per minute are
	// exceeded (IOTGATE_SCHEMA_WRITE_RATE).
	DetailSchemaWriteRate = "schema_write_rate"
)
