// Package openapi is iotgate's OpenAPI (swagger 2.0) description, generated
// by swag from the annotations in package api: `make docs` writes docs.go,
// swagger.json and swagger.yaml (never edit them by hand), and `make
// docs-check`, run by `make test`, fails when they are stale. This file and
// description.go are the only hand-written ones. Importing the package
// registers the description with swag for the Swagger UI that package api
// serves, and [Description] is the document served at /swagger/doc.json; it
// imports no package of the project. Its tests check that the description is
// valid Swagger 2.0 (go-openapi/validate), so that client generators accept
// it.
package openapi
