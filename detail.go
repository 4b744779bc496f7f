package iotgate

// Details: the more specific codes an Error may carry in Detail. With the
// E* codes they are the one vocabulary clients switch on: a problem body's
// "code" is the Detail when set, else the Code, and a command's ErrorCode
// is one of them too. They are public API: never change one's meaning.
const (
	// Readings and devices.
	DetailDeviceNotRegistered    = "device_not_registered"     // the sender is not a registered device
	DetailDeviceDomainNotAllowed = "device_domain_not_allowed" // the JID's domain is not in IOTGATE_DEVICE_DOMAINS
	DetailNamespaceNotServed     = "namespace_not_served"      // no payload in a namespace iotgate serves

	// Documents refused before or beside validation (readings, command
	// payloads and XSDs).
	DetailTooLarge            = "too_large"                        // over the size limit
	DetailTooDeep             = "too_deep"                         // nested too deeply
	DetailDoctypeForbidden    = "doctype_forbidden"                // a DOCTYPE or other <!...> declaration
	DetailCommentForbidden    = "comment_forbidden"                // an XML comment (command payloads)
	DetailProcInstForbidden   = "processing_instruction_forbidden" // a processing instruction (command payloads)
	DetailPatternValueTooLong = "pattern_value_too_long"           // a value too long for its xs:pattern
	DetailPatternTooCostly    = "pattern_too_costly"               // libxml2 gave up matching an xs:pattern
	DetailSchemaTooComplex    = "schema_too_complex"               // a schema over a compile cost limit (422)
	// A command sent as JSON (data) that has no XML form in the device's
	// schema: a key, value or array the schema does not allow there
	// (Fields says which key and why), no element fitting the data when
	// none was named, or an element the schema does not declare.
	DetailJSONNotMappable      = "json_not_mappable"
	DetailJSONElementAmbiguous = "json_element_ambiguous"
	DetailJSONElementUnknown   = "json_element_unknown"

	// Commands. A command that did not succeed stores why in ErrorCode:
	// one of DetailDeviceOffline, DetailXMPPError, DetailXMPPUnavailable,
	// DetailRestarted, ETimeout (no answer in time), ETooMany (too many
	// IQs waiting for answers) or EInternal (see the command's Error).
	DetailDeviceOffline        = "device_offline"   // no available resource, or the server bounced the IQ
	DetailXMPPError            = "xmpp_error"       // the device answered with an IQ error (Command.XMPPError)
	DetailXMPPUnavailable      = "xmpp_unavailable" // iotgate's XMPP stream was down or dropped
	DetailRestarted            = "restarted"        // iotgate stopped before the device answered
	DetailCommandExpired       = "command_expired"
	DetailCommandCanceled      = "command_canceled"
	DetailCommandNotQueued     = "command_not_queued" // only a queued command can be canceled
	DetailIdempotencyKeyTaken  = "idempotency_key_taken"
	DetailIdempotencyKeyReused = "idempotency_key_reused" // the same key with another request

	// HTTP.
	DetailRateLimited = "rate_limited"
	// Too many expensive requests (history pages) of one token at once.
	DetailTooManyConcurrent = "too_many_concurrent"

	// The database's schema (migrations).
	DetailMigrationDirty  = "migration_dirty"
	DetailSchemaTooNew    = "schema_too_new"
	DetailMigrationLocked = "migration_locked"
)

// Webhooks.
const (
	DetailWebhookURLRefused = "webhook_url_refused" // the URL's host is a loopback, private, link-local or metadata address
)
