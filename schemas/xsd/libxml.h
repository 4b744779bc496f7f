// Thin, hostile-input-safe binding to libxml2's XML Schema support. Only
// schemas/xsd/cgo.go uses it; see libxml.c for why each piece exists.

#ifndef IOTGATE_XSD_LIBXML_H
#define IOTGATE_XSD_LIBXML_H

#include <stddef.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/hash.h>
#include <libxml/xmlschemas.h>

// URIs with this scheme are the only ones the entity loader ever serves, and
// only while iot_compile runs on the same thread (see iot_loader).
#define IOT_IMPORT_SCHEME "iotgate-ns:"

#define IOT_MAX_ISSUES 16
#define IOT_MAX_MSG 512
#define IOT_MAX_PATH 512

// Outcome of a parse or a validation.
enum {
	IOT_OK = 0,
	IOT_MALFORMED = 1,  // not well-formed (or namespace-ill-formed) XML
	IOT_DOCTYPE = 2,    // a DOCTYPE was present: refused before any entity
	IOT_TOO_DEEP = 3,   // element nesting beyond the limit
	IOT_INVALID = 4,    // well-formed but not valid against the schema
	IOT_TOO_LONG = 5,   // a value checked against an xs:pattern is too long
	IOT_GAVE_UP = 6,    // validation failed inside libxml2 (its regexp budget)
	IOT_NOMEM = -1,     // libxml2 could not allocate
	IOT_INTERNAL = -2,  // libxml2 reported an internal failure
};

typedef struct {
	int line;
	char path[IOT_MAX_PATH];
	char msg[IOT_MAX_MSG];
} iot_issue;

// Per-call error collector: filled by the structured error handlers that are
// installed on each parser and validation context (never a global handler).
typedef struct {
	int n;         // issues stored
	int dropped;   // issues past IOT_MAX_ISSUES
	int doctype;   // a DOCTYPE was seen (parser stopped)
	int too_deep;  // depth limit hit (parser stopped)
	int max_depth; // limit for this call, 0 = libxml2's own (256)
	int warnings;  // collect warnings too (schema compile)
	// IOT_MAX_ISSUES entries, allocated at the first issue only: most
	// calls have none, and idle pooled workers should stay small.
	iot_issue *items;
} iot_errs;

// An in-memory schema document served for one IOT_IMPORT_SCHEME URI.
typedef struct {
	const char *uri;
	const char *data;
	int len;
} iot_import;

// A validation worker: the per-call state libxml2 does not let us share
// between threads. Workers are pooled per schema by the Go side.
typedef struct {
	xmlSchemaValidCtxtPtr v;
	xmlParserCtxtPtr p; // reused while parses succeed (see iot_validate)
	iot_errs e;
	unsigned char *out; // flattened document (see iot_flatten)
	size_t out_len;
	size_t out_cap;
	int oom;
} iot_worker;

void iot_init(void);

// The values a schema checks against xs:pattern facets, by the local name
// of their element or attribute, and the bound on their length, checked
// before validation (see iot_check_lengths). A value weighs the number of
// facets it is matched against.
typedef struct {
	xmlHashTablePtr names; // (name, kind "e" element or "a" attribute) -> weight
	int all;               // every value (the model could not tell which)
	int xsi_type;          // elements with an xsi:type attribute too
	long max_weight;       // the weight of those two
} iot_lengths;

iot_lengths *iot_lengths_new(int all, int xsi_type, long max_weight);
int iot_lengths_add(iot_lengths *l, const char *name, const char *kind, long weight);
void iot_lengths_free(iot_lengths *l);

// Schema documents.
xmlDocPtr iot_parse_schema_doc(const char *buf, int len, iot_errs *e, int *status);
int iot_dump_doc(xmlDocPtr doc, char **out, int *len);
xmlSchemaPtr iot_compile(xmlDocPtr doc, iot_import *imports, int n, iot_errs *e, int *refused);

// Validation.
iot_worker *iot_worker_new(xmlSchemaPtr schema);
void iot_worker_free(iot_worker *w);
// lengths (NULL: none) bounds values checked against patterns to max_value
// characters each, max_total in all.
int iot_validate(iot_worker *w, const char *buf, int len, int max_depth, int flatten,
	iot_lengths *lengths, long max_value, long max_total);

// Pattern probing (see libxml.c).
long iot_probe_pattern(const char *pat, const char **inputs, int n, long limit_us, long *total_us);

// Helpers for the Go side (cgo cannot read C unions/macros conveniently).
int iot_node_line(xmlNodePtr n);
void iot_xfree(void *p);
void iot_errs_release(iot_errs *e);

#endif
