// Package auth is the logic of API access: parsing scopes and device
// selectors, creating, listing, revoking and authenticating tokens (Service,
// with its cache and the bootstrap admin token). The token types (Token,
// Scope, Selector) and the TokenStore port are in the root package iotgate,
// so that the store (postgres) needs nothing from here.
//
// It does no I/O of its own (no HTTP, no SQL) and imports only the root
// package iotgate: package api consumes it to guard its routes, postgres
// stores the tokens, and cmd/iotgate wires them together and offers the
// `iotgate token` subcommands. Errors are *iotgate.Error values, so every
// transport maps them in its usual place.
package auth

import (
	"crypto/sha256"
	"slices"
	"strings"

	"github.com/iotgate/iotgate"
)

// ParseScopes parses a comma-separated list of scopes ("devices:read,
// commands:send"), dropping duplicates. Errors: invalid (unknown scope,
// empty list).
func ParseScopes(s string) ([]iotgate.Scope, error) {
	var out []iotgate.Scope
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		sc := iotgate.Scope(part)
		if !slices.Contains(iotgate.Scopes, sc) {
			return nil, iotgate.Errorf(iotgate.EInvalid, "unknown scope %q (known: %s)", part, scopeList(iotgate.Scopes))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, iotgate.Errorf(iotgate.EInvalid, "at least one scope is required (known: %s)", scopeList(iotgate.Scopes))
	}
	return out, nil
}

func scopeList(ss []iotgate.Scope) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

// ParseSelector parses "site=berlin,room=kitchen"; "" is the empty
// selector. Errors: invalid (not k=v, a key given twice, a bad label).
func ParseSelector(s string) (iotgate.Selector, error) {
	sel := iotgate.Selector{}
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

// Hash returns the SHA-256 of a token secret. A plain fast hash is right
// here, unlike for passwords: secrets are 256 random bits, so there is
// nothing to guess from the hash and no need for a slow, salted KDF; and it
// lets the store look a token up by its hash in one indexed query.
func Hash(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }
