// Package openapi is iotgate's OpenAPI (swagger 2.0) description, generated
// by swag from the annotations in package api: `make docs` writes docs.go,
// swagger.json and swagger.yaml (never edit them by hand), and `make
// docs-check`, run by `make test`, fails when they are stale. This file is
// the only hand-written one. Importing the package registers the
// description with swag for the Swagger UI that package api serves; it
// imports no package of the project.
package openapi
