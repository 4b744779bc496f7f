// Package schemas is the registry of device payload schemas (XSDs): named,
// immutable, numbered versions that are compiled once and then used to
// validate and render every reading.
//
// Compilation and validation happen in schemas/xsd, a libxml2 binding that
// never reads files, never touches the network and never expands entities.
//
// It may import the root package iotgate (errors, the SchemaSource port it
// implements) and schemas/xsd; never devices, a transport (api, component),
// postgres or cmd. It declares the Store it needs; postgres implements it.
// The errors of schemas/xsd become iotgate.Error values in one place,
// fromXSD.
package schemas
