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
