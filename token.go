package iotgate

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"
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

// Selector limits a token to the devices whose labels include all of its
// key-value pairs. An empty selector selects every device.
type Selector map[string]string

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

// String formats s as auth.ParseSelector reads it, keys sorted.
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
	out.ExpiresAt, out.RevokedAt, out.LastUsedAt = cloneTime(t.ExpiresAt), cloneTime(t.RevokedAt), cloneTime(t.LastUsedAt)
	return &out
}

// Validate checks the token's invariants. Errors: invalid.
func (t *Token) Validate() error {
	if strings.TrimSpace(t.Name) == "" {
		return Errorf(EInvalid, "name is required")
	}
	if len(t.Name) > MaxTokenNameLen {
		return Errorf(EInvalid, "name is longer than %d bytes", MaxTokenNameLen)
	}
	if len(t.Scopes) == 0 {
		return Errorf(EInvalid, "at least one scope is required")
	}
	for _, s := range t.Scopes {
		if !slices.Contains(Scopes, s) {
			return Errorf(EInvalid, "unknown scope %q", s)
		}
	}
	return ValidateLabels(t.Devices)
}

// MaxTokenNameLen bounds a token's name.
const MaxTokenNameLen = 200

// TokenStore keeps tokens. Only hashes are stored, never secrets.
type TokenStore interface {
	// CreateToken inserts t. Errors: conflict (ID or hash taken).
	CreateToken(ctx context.Context, t *Token) error
	// Token returns a token by ID. Errors: not_found.
	Token(ctx context.Context, id string) (*Token, error)
	// TokenByHash returns the token whose secret has this hash, revoked
	// and expired ones included. Errors: not_found.
	TokenByHash(ctx context.Context, hash []byte) (*Token, error)
	// Tokens lists every token, oldest first.
	Tokens(ctx context.Context) ([]*Token, error)
	// RevokeToken marks a token revoked at at, unless it already is, and
	// returns it. Errors: not_found.
	RevokeToken(ctx context.Context, id string, at time.Time) (*Token, error)
	// TouchToken sets a token's last use. Errors: not_found.
	TouchToken(ctx context.Context, id string, at time.Time) error
}
