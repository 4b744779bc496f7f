package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
)

// SchemaRegistry is what the API needs of the schema registry.
type SchemaRegistry interface {
	// RegisterAs compiles xsd and stores it as the next version of name,
	// registered by the token whose ID is owner. Errors: invalid (bad
	// name or description), unprocessable (the XSD does not compile;
	// Fields lists the compiler's issues), conflict (a quota on schema
	// versions is reached).
	RegisterAs(ctx context.Context, owner, name, xsd, description string) (*schemas.Schema, error)
	// Get returns one version of a schema; 0 means the latest.
	// Errors: not_found.
	Get(ctx context.Context, name string, version int) (*schemas.Schema, error)
	// Versions lists every version of a schema, oldest first.
	// Errors: not_found.
	Versions(ctx context.Context, name string) ([]*schemas.Schema, error)
	// List returns the latest version of every schema.
	List(ctx context.Context) ([]*schemas.Schema, error)
	// Delete removes one version. Errors: not_found, conflict (devices
	// use it).
	Delete(ctx context.Context, name string, version int) error
}

var _ SchemaRegistry = (*schemas.Registry)(nil)

// CreateSchemaRequest is the body of POST /v1/schemas.
type CreateSchemaRequest struct {
	// Name is 1-64 lowercase letters, digits, '.', '_' or '-', starting
	// and ending with a letter or digit.
	Name string `json:"name" validate:"required,max=64" example:"thermostat"`
	// XSD is the schema document (W3C XML Schema 1.0). It may import the
	// target namespace of another registered schema by namespace, without
	// a schemaLocation.
	XSD string `json:"xsd" validate:"required" example:"<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema' targetNamespace='urn:example:thermostat' elementFormDefault='qualified'><xs:element name='reading'>...</xs:element></xs:schema>"`
	// Description is free text for humans.
	Description string `json:"description" validate:"max=2000" example:"Kitchen thermostats: temperature, humidity and mode"`
}

// Schema is one version of a schema.
type Schema struct {
	Name    string `json:"name" example:"thermostat"`
	Version int    `json:"version" example:"2"`
	// Description is the text given at registration.
	Description string `json:"description" example:"Kitchen thermostats: temperature, humidity and mode"`
	// TargetNamespace is the namespace of the payload elements the schema
	// declares; a reading's payload must be in it.
	TargetNamespace string `json:"target_namespace" example:"urn:example:thermostat"`
	// GlobalElements are the top-level elements the schema declares.
	GlobalElements []string `json:"global_elements" example:"reading,set,get,state"`
	// Imports says which registered schema version each imported namespace
	// resolved to at registration; absent when the schema imports none.
	Imports   map[string]SchemaRef `json:"imports,omitempty"`
	CreatedAt time.Time            `json:"created_at" format:"date-time" example:"2026-01-02T15:04:05Z"`
}

// SchemaRef names one version of a schema.
type SchemaRef struct {
	Name    string `json:"name" example:"units"`
	Version int    `json:"version" example:"1"`
}

// SchemaList is a list of schema versions.
type SchemaList struct {
	Items []Schema `json:"items"`
}

// CompileIssue is one reason an XSD does not compile: the details of a 422
// response to POST /v1/schemas.
type CompileIssue struct {
	// Line is the line of the XSD the issue is on; 0 when unknown.
	Line int `json:"line" example:"2"`
	// Message is the compiler's.
	Message string `json:"message" example:"Element '{http://www.w3.org/2001/XMLSchema}element', attribute 'type': The QName value '{http://www.w3.org/2001/XMLSchema}nope' does not resolve to a(n) type definition."`
}

func schemaOf(s *schemas.Schema) Schema {
	out := Schema{
		Name: s.Name, Version: s.Version, Description: s.Description,
		TargetNamespace: s.TargetNamespace, GlobalElements: s.GlobalElements,
		CreatedAt: s.CreatedAt,
	}
	if out.GlobalElements == nil {
		out.GlobalElements = []string{}
	}
	if len(s.Imports) > 0 {
		out.Imports = make(map[string]SchemaRef, len(s.Imports))
		for ns, r := range s.Imports {
			out.Imports[ns] = SchemaRef{Name: r.Name, Version: r.Version}
		}
	}
	return out
}

func schemaListOf(ss []*schemas.Schema) SchemaList {
	return SchemaList{Items: itemsOf(ss, schemaOf)}
}

// schemaPath is the URL path of one schema version.
func schemaPath(name string, version int) string {
	return "/v1/schemas/" + url.PathEscape(name) + "/versions/" + strconv.Itoa(version)
}

// schemaHandler serves /v1/schemas.
type schemaHandler struct {
	reg SchemaRegistry
	// writes limits each token's schema writes: each registration costs
	// a compilation (up to seconds of CPU). Nil: no limit.
	writes *limiter
}

// writeAllowed takes one of the token's schema writes, or refuses with
// 429 schema_write_rate and Retry-After (whole seconds).
func (h *schemaHandler) writeAllowed(c echo.Context) error {
	tok := tokenOf(c)
	if h.writes == nil || tok == nil {
		return nil
	}
	if ok, wait := h.writes.allow(tok.ID); !ok {
		secs := max(int(wait.Seconds()+0.999), 1)
		c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
		return &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailSchemaWriteRate,
			Message: fmt.Sprintf("this token's schema writes per minute are exceeded, retry in %d s", secs)}
	}
	return nil
}

// create registers a new version of a schema.
//
//	@Summary		Register a schema version
//	@Description	Compiles the XSD and stores it as the next version (1, 2, ...) of the named schema. Versions are immutable: to change a schema, register a new version and move devices to it (PATCH /v1/devices/{jid}).
//	@Description	A request of the wrong shape (bad JSON, a missing or bad name) is refused with 400; a well-formed request whose XSD does not compile with 422, whose details list the compiler's issues, each with its line and message.
//	@Tags			schemas
//	@Accept			json
//	@Produce		json
//	@Param			schema	body		api.CreateSchemaRequest	true	"The schema to register"
//	@Success		201		{object}	api.Schema
//	@Header			201		{string}	Location										"URL path of the new version, for example /v1/schemas/thermostat/versions/2"
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}		"Bad JSON, an unknown or missing field, or a bad name"
//	@Failure		413		{object}	api.ErrorResponse								"Body too large"
//	@Failure		409		{object}	api.ErrorResponse								"The registry holds IOTGATE_MAX_SCHEMA_VERSIONS versions already, or this token has registered IOTGATE_MAX_SCHEMA_VERSIONS_PER_TOKEN (code schema_quota_exceeded): delete unused versions first"
//	@Failure		415		{object}	api.ErrorResponse								"Body is not JSON (Content-Type must be application/json)"
//	@Failure		422		{object}	api.ErrorResponse{details=[]api.CompileIssue}	"The XSD does not compile (code unprocessable), or is over a compile cost limit (code schema_too_complex; see docs/operations.md, Limits); details lists the issues"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate (code rate_limited) or schema writes per minute (code schema_write_rate, IOTGATE_SCHEMA_WRITE_RATE) are exceeded"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas [post]
func (h *schemaHandler) create(c echo.Context) error {
	if err := h.writeAllowed(c); err != nil {
		return err
	}
	var req CreateSchemaRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	owner := ""
	if tok := tokenOf(c); tok != nil {
		owner = tok.ID
	}
	s, err := h.reg.RegisterAs(c.Request().Context(), owner, req.Name, req.XSD, req.Description)
	if err != nil {
		return fmt.Errorf("register schema %q: %w", req.Name, err)
	}
	c.Response().Header().Set(echo.HeaderLocation, schemaPath(s.Name, s.Version))
	return c.JSON(http.StatusCreated, schemaOf(s))
}

// list lists the latest version of every schema.
//
//	@Summary		List schemas
//	@Description	Lists the latest version of every registered schema, by name.
//	@Tags			schemas
//	@Produce		json
//	@Success		200	{object}	api.SchemaList
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas [get]
func (h *schemaHandler) list(c echo.Context) error {
	ss, err := h.reg.List(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list schemas: %w", err)
	}
	return c.JSON(http.StatusOK, schemaListOf(ss))
}

// latest returns the latest version of a schema.
//
//	@Summary		Get a schema's latest version
//	@Description	Returns the latest version of the named schema.
//	@Tags			schemas
//	@Produce		json
//	@Param			name	path		string	true	"Schema name"	extensions(x-example=thermostat)
//	@Success		200		{object}	api.Schema
//	@Failure		404		{object}	api.ErrorResponse	"No such schema"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas/{name} [get]
func (h *schemaHandler) latest(c echo.Context) error {
	name, err := pathParam(c, "name")
	if err != nil {
		return err
	}
	s, err := h.reg.Get(c.Request().Context(), name, 0)
	if err != nil {
		return fmt.Errorf("get schema %q: %w", name, err)
	}
	return c.JSON(http.StatusOK, schemaOf(s))
}

// versions lists every version of a schema.
//
//	@Summary		List a schema's versions
//	@Description	Lists every version of the named schema, oldest first.
//	@Tags			schemas
//	@Produce		json
//	@Param			name	path		string	true	"Schema name"	extensions(x-example=thermostat)
//	@Success		200		{object}	api.SchemaList
//	@Failure		404		{object}	api.ErrorResponse	"No such schema"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas/{name}/versions [get]
func (h *schemaHandler) versions(c echo.Context) error {
	name, err := pathParam(c, "name")
	if err != nil {
		return err
	}
	ss, err := h.reg.Versions(c.Request().Context(), name)
	if err != nil {
		return fmt.Errorf("list versions of schema %q: %w", name, err)
	}
	return c.JSON(http.StatusOK, schemaListOf(ss))
}

// version returns one version of a schema.
//
//	@Summary		Get a schema version
//	@Description	Returns one version of the named schema. The XSD itself is at .../xsd.
//	@Tags			schemas
//	@Produce		json
//	@Param			name	path		string	true	"Schema name"	extensions(x-example=thermostat)
//	@Param			version	path		int		true	"Version"		minimum(1)	extensions(x-example=2)
//	@Success		200		{object}	api.Schema
//	@Failure		400		{object}	api.ErrorResponse	"Version is not a positive integer"
//	@Failure		404		{object}	api.ErrorResponse	"No such schema or version"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas/{name}/versions/{version} [get]
func (h *schemaHandler) version(c echo.Context) error {
	s, err := h.get(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, schemaOf(s))
}

// xsd returns the XSD of one version of a schema.
//
//	@Summary		Get a schema version's XSD
//	@Description	Returns the XSD document of one version of the named schema, exactly as registered. Errors are JSON, as everywhere.
//	@Tags			schemas
//	@Produce		application/xml
//	@Produce		json
//	@Param			name	path		string				true	"Schema name"	extensions(x-example=thermostat)
//	@Param			version	path		int					true	"Version"		minimum(1)	extensions(x-example=2)
//	@Success		200		{string}	string				"The XSD (application/xml)"
//	@Failure		400		{object}	api.ErrorResponse	"Version is not a positive integer"
//	@Failure		404		{object}	api.ErrorResponse	"No such schema or version"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas/{name}/versions/{version}/xsd [get]
func (h *schemaHandler) xsd(c echo.Context) error {
	s, err := h.get(c)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, echo.MIMEApplicationXMLCharsetUTF8, []byte(s.XSD))
}

// JSONSchemas is implemented by schema registries that publish a JSON
// Schema of each version (schemas.Registry does).
type JSONSchemas interface {
	// JSONSchema returns the JSON Schema of a version of a schema.
	// Errors: not_found, unavailable.
	JSONSchema(ctx context.Context, name string, version int) (json.RawMessage, error)
}

var _ JSONSchemas = (*schemas.Registry)(nil)

// jsonSchema returns the JSON Schema generated from a schema version's XSD.
//
//	@Summary		Get a schema version's JSON Schema
//	@Description	Returns a JSON Schema (draft 2020-12) generated from the XSD of one version of the named schema: one $defs entry per global element (by its local name) describing the JSON of a document with that root, which is both a reading's data and a command's data (the same shape both ways). Types come from the XSD's simple types (number, boolean, string; enumerations as enum; numeric bounds as minimum/maximum); xs:pattern is not translated; additionalProperties is false where the XSD content is closed. See docs/commands.md for the mapping.
//	@Tags			schemas
//	@Produce		json
//	@Param			name	path		string				true	"Schema name"	extensions(x-example=thermostat)
//	@Param			version	path		int					true	"Version"		minimum(1)	extensions(x-example=2)
//	@Success		200		{object}	object				"The JSON Schema (application/schema+json)"
//	@Failure		400		{object}	api.ErrorResponse	"Version is not a positive integer"
//	@Failure		404		{object}	api.ErrorResponse	"No such schema or version"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas/{name}/versions/{version}/json-schema [get]
func (h *schemaHandler) jsonSchema(c echo.Context) error {
	js, ok := h.reg.(JSONSchemas)
	if !ok {
		return iotgate.Errorf(iotgate.ENotFound, "JSON Schemas are not served")
	}
	name, err := pathParam(c, "name")
	if err != nil {
		return err
	}
	v, err := versionParam(c)
	if err != nil {
		return err
	}
	out, err := js.JSONSchema(c.Request().Context(), name, v)
	if err != nil {
		return fmt.Errorf("JSON Schema of %q version %d: %w", name, v, err)
	}
	return c.Blob(http.StatusOK, "application/schema+json", out)
}

// get returns the schema version the path names.
func (h *schemaHandler) get(c echo.Context) (*schemas.Schema, error) {
	name, err := pathParam(c, "name")
	if err != nil {
		return nil, err
	}
	v, err := versionParam(c)
	if err != nil {
		return nil, err
	}
	s, err := h.reg.Get(c.Request().Context(), name, v)
	if err != nil {
		return nil, fmt.Errorf("get schema %q version %d: %w", name, v, err)
	}
	return s, nil
}

// delete removes one version of a schema.
//
//	@Summary		Delete a schema version
//	@Description	Deletes one version of the named schema. A version that devices use, or that another version imports, cannot be deleted (409 schema_in_use; the message names an importer): move or delete those devices, or delete the importing versions, first.
//	@Tags			schemas
//	@Produce		json
//	@Param			name	path	string	true	"Schema name"	extensions(x-example=thermostat)
//	@Param			version	path	int		true	"Version"		minimum(1)	extensions(x-example=1)
//	@Success		204		"Deleted"
//	@Failure		400		{object}	api.ErrorResponse	"Version is not a positive integer"
//	@Failure		404		{object}	api.ErrorResponse	"No such schema or version"
//	@Failure		409		{object}	api.ErrorResponse	"Devices use this version, or another version imports it (code schema_in_use)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate (code rate_limited) or schema writes per minute (code schema_write_rate, IOTGATE_SCHEMA_WRITE_RATE) are exceeded"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/schemas/{name}/versions/{version} [delete]
func (h *schemaHandler) delete(c echo.Context) error {
	if err := h.writeAllowed(c); err != nil {
		return err
	}
	name, err := pathParam(c, "name")
	if err != nil {
		return err
	}
	v, err := versionParam(c)
	if err != nil {
		return err
	}
	if err := h.reg.Delete(c.Request().Context(), name, v); err != nil {
		return fmt.Errorf("delete schema %q version %d: %w", name, v, err)
	}
	return c.NoContent(http.StatusNoContent)
}
