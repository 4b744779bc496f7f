// Package auth is the domain of API access: bearer tokens, their scopes and
// device selectors, the Store interface the database adapter implements, and
// the Service that creates, lists, revokes and authenticates tokens.
//
// It does no I/O of its own (no HTTP, no SQL): package api consumes it to
// guard its routes, devices/postgres stores tokens, and cmd/iotgate wires
// them together and offers the `iotgate token` subcommands. Errors are
// *iotgate.Error values, the one domain error type, so every transport maps
// them in its usual place.
package auth

import (
	"crypto/sha256"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/iotgate/iotgate"
)

// Scope is a permission a token carries.
type Scope string

// The scopes. ScopeAdmin implies every other one.
const (
	ScopeSchemasRead  Scope = "schemas:read"
	ScopeSchemasWrite Scope = "schemas:write"
	ScopeDevicesRead  Scope = "devices:read"
	ScopeDevicesWrite Scope = "devices:write"
	ScopeCommandsSend Scope = "commands:send"
	ScopeAdmin        Scope = "admin"
)

// Scopes lists every scope, for help texts and validation.
var Scopes = []Scope{ScopeSchemasRead, ScopeSchemasWrite, ScopeDevicesRead, ScopeDevicesWrite, ScopeCommandsSend, ScopeAdmin}

// ParseScopes parses a comma-separated list of scopes ("devices:read,
// commands:send"), dropping duplicates. Errors: invalid (unknown scope,
// empty list).
func ParseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		sc := Scope(part)
		if !slices.Contains(Scopes, sc) {
			return nil, iotgate.Errorf(iotgate.EInvalid, "unknown scope %q (known: %s)", part, scopeList(Scopes))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, iotgate.Errorf(iotgate.EInvalid, "at least one scope is required (known: %s)", scopeList(Scopes))
	}
	return out, nil
}

func scopeList(ss []Scope) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

// Selector limits a token to the devices whose labels include all of its
// key-value pairs. An empty selector selects every device.
type Selector map[string]string

// ParseSelector parses "site=berlin,room=kitchen"; "" is the empty
// selector. Errors: invalid (not k=v, a key given twice, a bad label).
func ParseSelector(s string) (Selector, error) {
	sel := Selector{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, iotgate.Errorf(iotgate.EInvalid, "device selector %q must be key=value, for example site=berlin", part)
		}
		if _, dup := sel[k]; dup {
			return nil, iotgate.Errorf(iotgate.EInvalid, "device selector names label %q twice", k)
		}
		sel[k] = v
	}
	if err := iotgate.ValidateLabels(sel); err != nil {
		return nil, err
	}
	return sel, nil
}

// Matches reports whether a device with these labels is selected.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Within reports whether s selects no device outside outer: it has all of
// outer's pairs (and maybe more).
func (s Selector) Within(outer Selector) bool { return Selector(outer).Matches(s) }

// String formats s as ParseSelector reads it, keys sorted.
func (s Selector) String() string {
	parts := make([]string, 0, len(s))
	for _, k := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, k+"="+s[k])
	}
	return strings.Join(parts, ",")
}

// Token is an API token as stored: never the secret itself, only its hash.
type Token struct {
	// ID identifies the token in lists, logs and revocation; it is not
	// secret.
	ID string
	// Name says who or what uses the token; free text.
	Name   string
	Scopes []Scope
	// Devices limits the token to the devices it selects.
	Devices Selector
	// Hash is the SHA-256 of the secret.
	Hash       []byte
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
}

// Allows reports whether the token carries scope s (admin carries all).
func (t *Token) Allows(s Scope) bool {
	return slices.Contains(t.Scopes, s) || slices.Contains(t.Scopes, ScopeAdmin)
}

// Active reports whether the token is neither revoked nor expired at now.
func (t *Token) Active(now time.Time) bool {
	return t.RevokedAt == nil && (t.ExpiresAt == nil || now.Before(*t.ExpiresAt))
}

// Clone returns a deep copy of t, so that cached tokens can't be changed
// through what callers get.
func (t *Token) Clone() *Token {
	out := *t
	out.Scopes = slices.Clone(t.Scopes)
	out.Devices = maps.Clone(t.Devices)
	out.Hash = slices.Clone(t.Hash)
	cp := func(p *time.Time) *time.Time {
		if p == nil {
			return nil
		}
		v := *p
		return &v
	}
	out.ExpiresAt, out.RevokedAt, out.LastUsedAt = cp(t.ExpiresAt), cp(t.RevokedAt), cp(t.LastUsedAt)
	return &out
}

// Validate checks the token's invariants. Errors: invalid.
func (t *Token) Validate() error {
	if strings.TrimSpace(t.Name) == "" {
		return iotgate.Errorf(iotgate.EInvalid, "name is required")
	}
	if len(t.Name) > MaxNameLen {
		return iotgate.Errorf(iotgate.EInvalid, "name is longer than %d bytes", MaxNameLen)
	}
	if len(t.Scopes) == 0 {
		return iotgate.Errorf(iotgate.EInvalid, "at least one scope is required")
	}
	for _, s := range t.Scopes {
		if !slices.Contains(Scopes, s) {
			return iotgate.Errorf(iotgate.EInvalid, "unknown scope %q", s)
		}
	}
	return iotgate.ValidateLabels(t.Devices)
}

// MaxNameLen bounds a token's name.
const MaxNameLen = 200

// Hash returns the SHA-256 of a token secret. A plain fast hash is right
// here, unlike for passwords: secrets are 256 random bits, so there is
// nothing to guess from the hash and no need for a slow, salted KDF; and it
// lets the store look a token up by its hash in one indexed query.
func Hash(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }
