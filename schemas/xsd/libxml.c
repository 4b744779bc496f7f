// Hostile-input-safe use of libxml2 2.9.x for XML Schema compile and
// validation. Safety rests on four things, all set up here:
//
//  1. A process-wide external entity loader (iot_loader) that refuses every
//     URI, except IOT_IMPORT_SCHEME URIs while iot_compile runs on the same
//     thread: those are served from an in-memory table the Go side built from
//     the import callback. No file, no network, ever.
//  2. A DOCTYPE stops the parser inside the internalSubset SAX callback, which
//     libxml2 calls right after the DOCTYPE name and external ID are read and
//     before any markup declaration, entity or external subset is looked at.
//  3. Parse options never include NOENT, DTDLOAD, DTDATTR or HUGE, and include
//     NONET.
//  4. Errors go to structured handlers installed per parser/validation
//     context with a per-call collector; the global handlers are set to no-ops
//     only so that nothing is ever printed to stderr.

#include "libxml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/SAX2.h>
#include <libxml/dict.h>
#include <libxml/globals.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlIO.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlregexp.h>
#include <libxml/xmlschemastypes.h>
#include <libxml/xmlsave.h>

// Parse options for every document we parse ourselves. NOCDATA merges CDATA
// into text (simpler flattening), COMPACT saves small text allocations,
// BIG_LINES keeps line numbers right past 65535.
#define IOT_PARSE_OPTS (XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_COMPACT | XML_PARSE_BIG_LINES)

// Reuse a parser context until its dictionary holds this many names, so that
// hostile readings with ever-new element names cannot grow it without bound.
#define IOT_MAX_DICT 4096

// The import table for the compile running on this thread, if any. A cgo
// call never changes threads, so this is exactly "the current compile".
static __thread iot_import *iot_cur_imports;
static __thread int iot_cur_nimports;
static __thread int iot_cur_refused;

static void iot_silent(void *ctx, const char *msg, ...) {
	(void)ctx;
	(void)msg;
}

static void iot_silent_structured(void *ctx, xmlErrorPtr err) {
	(void)ctx;
	(void)err;
}

static xmlParserInputPtr iot_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt) {
	(void)id;
	if (iot_cur_imports != NULL && url != NULL &&
	    strncmp(url, IOT_IMPORT_SCHEME, strlen(IOT_IMPORT_SCHEME)) == 0) {
		for (int i = 0; i < iot_cur_nimports; i++) {
			iot_import *im = &iot_cur_imports[i];
			if (strcmp(im->uri, url) != 0)
				continue;
			xmlParserInputBufferPtr buf =
			    xmlParserInputBufferCreateMem(im->data, im->len, XML_CHAR_ENCODING_NONE);
			if (buf == NULL)
				return NULL;
			xmlParserInputPtr in = xmlNewIOInputStream(ctxt, buf, XML_CHAR_ENCODING_NONE);
			if (in == NULL) {
				xmlFreeParserInputBuffer(buf);
				return NULL;
			}
			in->filename = (const char *)xmlStrdup((const xmlChar *)url);
			return in;
		}
	}
	iot_cur_refused++;
	return NULL;
}

void iot_init(void) {
	// xmlInitParser also records this thread as libxml2's "main thread";
	// both the main-thread and the per-thread defaults are silenced.
	xmlInitParser();
	xmlSchemaInitTypes(); // lazy init is racy in 2.9: do it once, up front
	xmlSetExternalEntityLoader(iot_loader);
	xmlSetGenericErrorFunc(NULL, iot_silent);
	xmlThrDefSetGenericErrorFunc(NULL, iot_silent);
	xmlSetStructuredErrorFunc(NULL, iot_silent_structured);
	xmlThrDefSetStructuredErrorFunc(NULL, iot_silent_structured);
}

// ---- error collection ------------------------------------------------------

static void iot_copy_trunc(char *dst, size_t cap, const char *src) {
	if (src == NULL) {
		dst[0] = 0;
		return;
	}
	size_t n = strlen(src);
	if (n >= cap) {
		n = cap - 1;
		// Do not cut a UTF-8 sequence in half.
		while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(dst, src, n);
	while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' ' || dst[n - 1] == '\r'))
		n--;
	dst[n] = 0;
}

void iot_errs_release(iot_errs *e) {
	free(e->items);
	e->items = NULL;
}

static iot_issue *iot_add(iot_errs *e) {
	if (e->items == NULL)
		e->items = calloc(IOT_MAX_ISSUES, sizeof(iot_issue));
	if (e->items == NULL || e->n >= IOT_MAX_ISSUES) {
		e->dropped++;
		return NULL;
	}
	iot_issue *is = &e->items[e->n++];
	is->line = 0;
	is->path[0] = 0;
	is->msg[0] = 0;
	return is;
}

static void iot_add_msg(iot_errs *e, int line, const char *msg) {
	iot_issue *is = iot_add(e);
	if (is == NULL)
		return;
	is->line = line;
	iot_copy_trunc(is->msg, sizeof is->msg, msg);
}

// Appends s to buf (length *n, capacity cap), keeping it NUL-terminated.
static void iot_cat(char *buf, size_t *n, size_t cap, const char *s) {
	size_t l = strlen(s);
	if (*n + l + 1 > cap) {
		if (*n + 4 < cap) {
			memcpy(buf + *n, "...", 3);
			*n += 3;
			buf[*n] = 0;
		}
		*n = cap; // mark full: further appends are dropped
		return;
	}
	memcpy(buf + *n, s, l);
	*n += l;
	buf[*n] = 0;
}

static int iot_same_name(xmlNodePtr a, xmlNodePtr b) {
	if (a->type != XML_ELEMENT_NODE || b->type != XML_ELEMENT_NODE)
		return 0;
	if (!xmlStrEqual(a->name, b->name))
		return 0;
	const xmlChar *na = a->ns ? a->ns->href : NULL;
	const xmlChar *nb = b->ns ? b->ns->href : NULL;
	return xmlStrEqual(na, nb) || (na == NULL && nb == NULL);
}

static void iot_path_rec(xmlNodePtr n, char *buf, size_t *len, size_t cap, int depth) {
	if (n == NULL || n->type == XML_DOCUMENT_NODE || depth > 300)
		return;
	if (n->type == XML_ATTRIBUTE_NODE) {
		iot_path_rec(n->parent, buf, len, cap, depth + 1);
		iot_cat(buf, len, cap, "/@");
		iot_cat(buf, len, cap, (const char *)n->name);
		return;
	}
	if (n->type != XML_ELEMENT_NODE) {
		iot_path_rec(n->parent, buf, len, cap, depth + 1);
		return;
	}
	iot_path_rec(n->parent, buf, len, cap, depth + 1);
	iot_cat(buf, len, cap, "/");
	iot_cat(buf, len, cap, (const char *)n->name);
	// XPath-style 1-based position, only when the name repeats among siblings.
	int idx = 1, total = 1;
	for (xmlNodePtr s = n->prev; s != NULL; s = s->prev)
		if (iot_same_name(s, n)) {
			idx++;
			total++;
		}
	for (xmlNodePtr s = n->next; s != NULL && total == idx; s = s->next)
		if (iot_same_name(s, n))
			total++;
	if (total > 1) {
		char num[24];
		snprintf(num, sizeof num, "[%d]", idx);
		iot_cat(buf, len, cap, num);
	}
}

static void iot_node_path(xmlNodePtr n, char *buf, size_t cap) {
	size_t len = 0;
	buf[0] = 0;
	iot_path_rec(n, buf, &len, cap, 0);
}

int iot_node_line(xmlNodePtr n) { return (int)xmlGetLineNo(n); }

// xmlFree is a function pointer variable, awkward to call from cgo.
void iot_xfree(void *p) { xmlFree(p); }

// Structured handler for our own parser contexts. userData is the parser
// context itself (libxml2's default), whose _private holds the collector.
static void iot_parser_serror(void *user, xmlErrorPtr err) {
	xmlParserCtxtPtr ctxt = (xmlParserCtxtPtr)user;
	if (ctxt == NULL || ctxt->_private == NULL || err == NULL)
		return;
	if (err->level == XML_ERR_WARNING)
		return;
	iot_errs *e = (iot_errs *)ctxt->_private;
	iot_issue *is = iot_add(e);
	if (is == NULL)
		return;
	is->line = err->line;
	iot_copy_trunc(is->msg, sizeof is->msg, err->message);
	// The element stack is the best path we have while parsing.
	size_t len = 0;
	for (int i = 0; i < ctxt->nameNr && i < 64; i++) {
		iot_cat(is->path, &len, sizeof is->path, "/");
		iot_cat(is->path, &len, sizeof is->path, (const char *)ctxt->nameTab[i]);
	}
}

// Structured handler for schema parser and validation contexts.
static void iot_schema_serror(void *user, xmlErrorPtr err) {
	iot_errs *e = (iot_errs *)user;
	if (e == NULL || err == NULL)
		return;
	if (err->level == XML_ERR_WARNING && !e->warnings)
		return;
	iot_issue *is = iot_add(e);
	if (is == NULL)
		return;
	is->line = err->line;
	xmlNodePtr node = (xmlNodePtr)err->node;
	if (node != NULL) {
		if (is->line == 0 && node->type == XML_ELEMENT_NODE)
			is->line = (int)xmlGetLineNo(node);
		if (is->line == 0 && node->type == XML_ATTRIBUTE_NODE && node->parent != NULL)
			is->line = (int)xmlGetLineNo(node->parent);
		iot_node_path(node, is->path, sizeof is->path);
	}
	iot_copy_trunc(is->msg, sizeof is->msg, err->message);
}

// ---- safe parsing ------------------------------------------------------------

static void iot_sax_internal_subset(void *user, const xmlChar *name, const xmlChar *ext, const xmlChar *sys) {
	(void)name;
	(void)ext;
	(void)sys;
	xmlParserCtxtPtr ctxt = (xmlParserCtxtPtr)user;
	iot_errs *e = (iot_errs *)ctxt->_private;
	if (e != NULL) {
		e->doctype = 1;
		iot_add_msg(e, ctxt->input ? ctxt->input->line : 0,
			    "DOCTYPE is not allowed (no DTDs, no entities)");
	}
	// Halts before the internal subset is read: no entity is ever declared.
	xmlStopParser(ctxt);
}

static void iot_sax_start_element_ns(void *user, const xmlChar *localname, const xmlChar *prefix,
				     const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
				     int nb_attributes, int nb_defaulted, const xmlChar **attributes) {
	xmlParserCtxtPtr ctxt = (xmlParserCtxtPtr)user;
	iot_errs *e = (iot_errs *)ctxt->_private;
	// nameNr is the parent's depth while the start tag is being reported.
	if (e != NULL && e->max_depth > 0 && ctxt->nameNr + 1 > e->max_depth) {
		e->too_deep = 1;
		iot_issue *is = iot_add(e);
		if (is != NULL) {
			is->line = ctxt->input ? ctxt->input->line : 0;
			snprintf(is->msg, sizeof is->msg, "element nesting exceeds %d levels", e->max_depth);
			size_t len = 0;
			for (int i = 0; i < ctxt->nameNr && i < 64; i++) {
				iot_cat(is->path, &len, sizeof is->path, "/");
				iot_cat(is->path, &len, sizeof is->path, (const char *)ctxt->nameTab[i]);
			}
			iot_cat(is->path, &len, sizeof is->path, "/");
			iot_cat(is->path, &len, sizeof is->path, (const char *)localname);
		}
		xmlStopParser(ctxt);
		return;
	}
	xmlSAX2StartElementNs(user, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes,
			      nb_defaulted, attributes);
}

static xmlParserCtxtPtr iot_new_parser(void) {
	xmlParserCtxtPtr p = xmlNewParserCtxt();
	if (p == NULL)
		return NULL;
	xmlSAXHandlerPtr sax = p->sax;
	sax->internalSubset = iot_sax_internal_subset;
	sax->startElementNs = iot_sax_start_element_ns;
	sax->serror = iot_parser_serror;
	// Defence in depth: with the parser stopped at any DOCTYPE these are never
	// reached, but without them no entity could be declared or loaded anyway.
	sax->externalSubset = NULL;
	sax->entityDecl = NULL;
	sax->unparsedEntityDecl = NULL;
	sax->getParameterEntity = NULL;
	sax->resolveEntity = NULL;
	return p;
}

// Parses buf with p; returns the document or NULL, and the outcome.
static xmlDocPtr iot_parse_with(xmlParserCtxtPtr p, const char *buf, int len, iot_errs *e, int *status) {
	p->_private = e;
	xmlDocPtr doc = xmlCtxtReadMemory(p, buf, len, NULL, NULL, IOT_PARSE_OPTS);
	int wf = p->wellFormed && p->nsWellFormed;
	p->_private = NULL;
	if (e->doctype) {
		*status = IOT_DOCTYPE;
	} else if (e->too_deep) {
		*status = IOT_TOO_DEEP;
	} else if (doc == NULL || !wf) {
		*status = IOT_MALFORMED;
		if (e->n == 0 && e->dropped == 0)
			iot_add_msg(e, 0, "document is not well-formed XML");
	} else {
		*status = IOT_OK;
		return doc;
	}
	if (doc != NULL)
		xmlFreeDoc(doc);
	return NULL;
}

xmlDocPtr iot_parse_schema_doc(const char *buf, int len, iot_errs *e, int *status) {
	xmlParserCtxtPtr p = iot_new_parser();
	if (p == NULL) {
		*status = IOT_NOMEM;
		return NULL;
	}
	xmlDocPtr doc = iot_parse_with(p, buf, len, e, status);
	xmlFreeParserCtxt(p);
	return doc;
}

int iot_dump_doc(xmlDocPtr doc, char **out, int *len) {
	xmlChar *mem = NULL;
	int n = 0;
	xmlDocDumpMemory(doc, &mem, &n);
	if (mem == NULL)
		return -1;
	*out = (char *)mem; // the caller frees it with iot_xfree
	*len = n;
	return 0;
}

// ---- compile -------------------------------------------------------------------

xmlSchemaPtr iot_compile(xmlDocPtr doc, iot_import *imports, int n, iot_errs *e, int *refused) {
	xmlSchemaParserCtxtPtr pc = xmlSchemaNewDocParserCtxt(doc);
	if (pc == NULL)
		return NULL;
	xmlSchemaSetParserStructuredErrors(pc, iot_schema_serror, e);
	iot_cur_imports = imports;
	iot_cur_nimports = n;
	iot_cur_refused = 0;
	xmlSchemaPtr s = xmlSchemaParse(pc);
	*refused = iot_cur_refused;
	iot_cur_imports = NULL;
	iot_cur_nimports = 0;
	iot_cur_refused = 0;
	xmlSchemaFreeParserCtxt(pc);
	return s;
}

// ---- validation ---------------------------------------------------------------

iot_worker *iot_worker_new(xmlSchemaPtr schema) {
	iot_worker *w = calloc(1, sizeof *w);
	if (w == NULL)
		return NULL;
	w->v = xmlSchemaNewValidCtxt(schema);
	if (w->v == NULL) {
		free(w);
		return NULL;
	}
	xmlSchemaSetValidStructuredErrors(w->v, iot_schema_serror, &w->e);
	return w;
}

void iot_worker_free(iot_worker *w) {
	if (w == NULL)
		return;
	if (w->v != NULL)
		xmlSchemaFreeValidCtxt(w->v);
	if (w->p != NULL)
		xmlFreeParserCtxt(w->p);
	iot_errs_release(&w->e);
	free(w->out);
	free(w);
}

static void iot_out_grow(iot_worker *w, size_t need) {
	if (w->oom)
		return;
	if (w->out_len + need <= w->out_cap)
		return;
	size_t cap = w->out_cap ? w->out_cap : 1024;
	while (cap < w->out_len + need)
		cap *= 2;
	unsigned char *p = realloc(w->out, cap);
	if (p == NULL) {
		w->oom = 1;
		return;
	}
	w->out = p;
	w->out_cap = cap;
}

static void iot_put_byte(iot_worker *w, unsigned char b) {
	iot_out_grow(w, 1);
	if (!w->oom)
		w->out[w->out_len++] = b;
}

static void iot_put_uvarint(iot_worker *w, size_t v) {
	iot_out_grow(w, 10);
	if (w->oom)
		return;
	while (v >= 0x80) {
		w->out[w->out_len++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	w->out[w->out_len++] = (unsigned char)v;
}

static void iot_put_str(iot_worker *w, const xmlChar *s) {
	size_t n = s ? strlen((const char *)s) : 0;
	iot_put_uvarint(w, n);
	iot_out_grow(w, n);
	if (w->oom || n == 0)
		return;
	memcpy(w->out + w->out_len, s, n);
	w->out_len += n;
}

// Record opcodes of the flattened tree; schemas/xsd/flat.go decodes them.
enum { IOT_F_START = 1, IOT_F_ATTR = 2, IOT_F_TEXT = 3, IOT_F_END = 4, IOT_F_NS = 5 };

// Namespace ids are cached in xmlNs._private (the document is ours and is
// freed right after), so each URI is written once however often it is used.
static size_t iot_ns_id(iot_worker *w, xmlNsPtr ns, size_t *next) {
	if (ns == NULL || ns->href == NULL)
		return 0;
	if (ns->_private != NULL)
		return (size_t)(uintptr_t)ns->_private;
	size_t id = (*next)++;
	ns->_private = (void *)(uintptr_t)id;
	iot_put_byte(w, IOT_F_NS);
	iot_put_str(w, ns->href);
	return id;
}

static void iot_flatten(iot_worker *w, xmlNodePtr root) {
	size_t next = 1;
	xmlNodePtr n = root;
	while (n != NULL) {
		int descend = 0;
		switch (n->type) {
		case XML_ELEMENT_NODE: {
			size_t id = iot_ns_id(w, n->ns, &next);
			for (xmlAttrPtr a = n->properties; a != NULL; a = a->next)
				(void)iot_ns_id(w, a->ns, &next);
			iot_put_byte(w, IOT_F_START);
			iot_put_uvarint(w, id);
			iot_put_str(w, n->name);
			for (xmlAttrPtr a = n->properties; a != NULL; a = a->next) {
				iot_put_byte(w, IOT_F_ATTR);
				iot_put_uvarint(w, iot_ns_id(w, a->ns, &next));
				iot_put_str(w, a->name);
				// Attribute values are text children (no entities: no DTD).
				xmlNodePtr t = a->children;
				if (t != NULL && t->next == NULL && t->type == XML_TEXT_NODE) {
					iot_put_str(w, t->content);
				} else {
					xmlChar *v = xmlNodeListGetString(n->doc, a->children, 1);
					iot_put_str(w, v);
					xmlFree(v);
				}
			}
			descend = 1;
			break;
		}
		case XML_TEXT_NODE:
		case XML_CDATA_SECTION_NODE:
			iot_put_byte(w, IOT_F_TEXT);
			iot_put_str(w, n->content);
			break;
		default:
			break; // comments, processing instructions
		}
		if (descend && n->children != NULL) {
			n = n->children;
			continue;
		}
		if (descend)
			iot_put_byte(w, IOT_F_END);
		// Climb until a next sibling exists, closing elements on the way.
		while (n != root && n->next == NULL) {
			n = n->parent;
			iot_put_byte(w, IOT_F_END);
		}
		if (n == root)
			break;
		n = n->next;
	}
}

// ---- lengths of pattern-checked values -------------------------------------

// libxml2 matches xs:pattern facets by backtracking, in time polynomial
// (or, up to its push budget, exponential) in the value's length; the
// compile-time probe (probe.go) catches the usual bad shapes but not all.
// Bounding the length of every value a pattern will see, and their sum in
// one document, bounds what one validation can cost whatever the pattern.

iot_lengths *iot_lengths_new(int all, int xsi_type, long max_weight) {
	iot_lengths *l = calloc(1, sizeof *l);
	if (l == NULL)
		return NULL;
	l->names = xmlHashCreate(16);
	if (l->names == NULL) {
		free(l);
		return NULL;
	}
	l->all = all;
	l->xsi_type = xsi_type;
	l->max_weight = max_weight < 1 ? 1 : max_weight;
	return l;
}

// iot_lengths_add records a name, keeping the largest weight given for it.
int iot_lengths_add(iot_lengths *l, const char *name, const char *kind, long weight) {
	if (weight < 1)
		weight = 1;
	void *old = xmlHashLookup2(l->names, (const xmlChar *)name, (const xmlChar *)kind);
	if (old != NULL && (long)(intptr_t)old >= weight)
		return 0;
	return xmlHashUpdateEntry2(l->names, (const xmlChar *)name, (const xmlChar *)kind, (void *)(intptr_t)weight, NULL);
}

// iot_weight is the weight of a value of the element or attribute name
// (kind "e" or "a"), 0 when no pattern checks it.
static long iot_weight(iot_lengths *l, const xmlChar *name, const char *kind) {
	if (l->all)
		return l->max_weight;
	return (long)(intptr_t)xmlHashLookup2(l->names, name, BAD_CAST kind);
}

void iot_lengths_free(iot_lengths *l) {
	if (l == NULL)
		return;
	xmlHashFree(l->names, NULL);
	free(l);
}

// iot_chars counts the characters (not bytes) of the text nodes in list.
static long iot_chars(xmlNodePtr list) {
	long n = 0;
	for (xmlNodePtr t = list; t != NULL; t = t->next) {
		if ((t->type != XML_TEXT_NODE && t->type != XML_CDATA_SECTION_NODE) || t->content == NULL)
			continue;
		for (const xmlChar *c = t->content; *c; c++)
			n += (*c & 0xC0) != 0x80;
	}
	return n;
}

static const xmlChar iot_xsi_ns[] = "http://www.w3.org/2001/XMLSchema-instance";

// iot_too_long records an issue for node n, whose value is chars long.
static void iot_too_long(iot_errs *e, xmlNodePtr n, const char *what, long chars, long limit, int total) {
	iot_issue *is = iot_add(e);
	if (is == NULL)
		return;
	is->line = (int)xmlGetLineNo(n->type == XML_ATTRIBUTE_NODE ? n->parent : n);
	iot_node_path(n, is->path, sizeof is->path);
	if (total)
		snprintf(is->msg, sizeof is->msg, "the values checked against xs:pattern facets add up to more than %ld characters "
			"(at %s %s; a value counts once per facet it is matched against): over the limit for one document", limit, what, n->name);
	else
		snprintf(is->msg, sizeof is->msg, "the value of %s %s is %ld characters, over the limit of %ld "
			"for a value checked against an xs:pattern", what, n->name, chars, limit);
}

// iot_check_lengths walks the parsed document and refuses it (IOT_TOO_LONG)
// when a value l covers is longer than max_value, or all of them together
// longer than max_total.
static int iot_check_lengths(iot_errs *e, xmlNodePtr root, iot_lengths *l, long max_value, long max_total) {
	long total = 0;
	xmlNodePtr n = root;
	while (n != NULL) {
		if (n->type == XML_ELEMENT_NODE) {
			long w = iot_weight(l, n->name, "e");
			if (l->xsi_type && w < l->max_weight && xmlHasNsProp(n, BAD_CAST "type", iot_xsi_ns) != NULL)
				w = l->max_weight;
			if (w > 0) {
				long c = iot_chars(n->children);
				total += c * w;
				if (c > max_value) {
					iot_too_long(e, n, "element", c, max_value, 0);
					return IOT_TOO_LONG;
				}
				if (total > max_total) {
					iot_too_long(e, n, "element", c, max_total, 1);
					return IOT_TOO_LONG;
				}
			}
			for (xmlAttrPtr a = n->properties; a != NULL; a = a->next) {
				long w = iot_weight(l, a->name, "a");
				if (w == 0)
					continue;
				long c = iot_chars(a->children);
				total += c * w;
				if (c > max_value) {
					iot_too_long(e, (xmlNodePtr)a, "attribute", c, max_value, 0);
					return IOT_TOO_LONG;
				}
				if (total > max_total) {
					iot_too_long(e, (xmlNodePtr)a, "attribute", c, max_total, 1);
					return IOT_TOO_LONG;
				}
			}
			if (n->children != NULL) {
				n = n->children;
				continue;
			}
		}
		while (n != root && n->next == NULL)
			n = n->parent;
		if (n == root)
			break;
		n = n->next;
	}
	return IOT_OK;
}

int iot_validate(iot_worker *w, const char *buf, int len, int max_depth, int flatten,
	iot_lengths *lengths, long max_value, long max_total) {
	iot_issue *items = w->e.items; // kept for reuse
	memset(&w->e, 0, sizeof w->e);
	w->e.items = items;
	w->e.max_depth = max_depth;
	w->out_len = 0;
	w->oom = 0;
	if (w->out_cap > (1 << 18)) { // do not keep a big buffer for a rare big document
		free(w->out);
		w->out = NULL;
		w->out_cap = 0;
	}
	if (w->p != NULL && xmlDictSize(w->p->dict) > IOT_MAX_DICT) {
		xmlFreeParserCtxt(w->p);
		w->p = NULL;
	}
	if (w->p == NULL) {
		w->p = iot_new_parser();
		if (w->p == NULL)
			return IOT_NOMEM;
	}
	int status = IOT_OK;
	xmlDocPtr doc = iot_parse_with(w->p, buf, len, &w->e, &status);
	if (doc == NULL) {
		// A context that saw an error or a stop is not worth trusting again.
		xmlFreeParserCtxt(w->p);
		w->p = NULL;
		return status;
	}
	if (lengths != NULL) {
		status = iot_check_lengths(&w->e, xmlDocGetRootElement(doc), lengths, max_value, max_total);
		if (status != IOT_OK) {
			xmlFreeDoc(doc);
			return status;
		}
	}
	int rc = xmlSchemaValidateDoc(w->v, doc);
	if (rc > 0) {
		status = IOT_INVALID;
		if (w->e.n == 0 && w->e.dropped == 0)
			iot_add_msg(&w->e, 0, "document is not valid");
	} else if (rc < 0) {
		// The document parsed and its values passed the length checks:
		// what fails inside validation is, in practice, libxml2 running
		// out of its backtracking budget on an xs:pattern.
		status = IOT_GAVE_UP;
	} else if (flatten) {
		iot_flatten(w, xmlDocGetRootElement(doc));
		if (w->oom)
			status = IOT_NOMEM;
	}
	xmlFreeDoc(doc);
	return status;
}

// ---- pattern probing ----------------------------------------------------------

// libxml2 2.9 matches xs:pattern regexps by backtracking. Its budget
// (MAX_PUSH) stops some exponential cases after ~0.3 s, but nested or
// adjacent stars such as a*a*a*b are polynomial and unbounded: one 4 KiB
// value takes over a minute. iot_probe_pattern matches pat against the
// probe inputs, stopping at the first match that takes more than limit_us
// of thread CPU time; it returns the worst time seen in microseconds (a
// match that ran out of libxml2's budget counts as 1 s), adds the time
// spent to *total_us, and returns -1 when pat does not compile (libxml2's
// schema compile reports that).
long iot_probe_pattern(const char *pat, const char **inputs, int n, long limit_us, long *total_us) {
	xmlRegexpPtr re = xmlRegexpCompile((const xmlChar *)pat);
	if (re == NULL)
		return -1;
	long worst = 0;
	for (int i = 0; i < n && worst <= limit_us; i++) {
		struct timespec a, b;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
		int r = xmlRegexpExec(re, (const xmlChar *)inputs[i]);
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
		long us = (long)(b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000;
		*total_us += us;
		if (r < 0 && us < 1000000L)
			us = 1000000L;
		if (us > worst)
			worst = us;
	}
	xmlRegFreeRegexp(re);
	return worst;
}
