package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// Prefix starts every token secret, so that leaked tokens are easy to
// recognize (by people and by secret scanners).
const Prefix = "iotg_"

// secretBytes is the randomness of a secret: 256 bits.
const secretBytes = 32

// MinBootstrapLen is the shortest bootstrap admin token accepted.
const MinBootstrapLen = 32

// BootstrapID and BootstrapName stand for the bootstrap admin token (given
// in the environment, never stored) wherever a token ID or name is shown,
// for example as the sender of a command.
const (
	BootstrapID   = "bootstrap"
	BootstrapName = "bootstrap"
)

// Defaults for the zero values of Config.
const (
	DefaultCacheTTL   = 10 * time.Second
	DefaultTouchEvery = time.Minute
	// DefaultCacheSize bounds the cache: when full, it starts over.
	DefaultCacheSize = 10000
)

// Config tunes a Service. The zero value is usable.
type Config struct {
	// Bootstrap, when set, is an admin token that is not in the store
	// (for the first start and for automation). At least
	// MinBootstrapLen characters.
	Bootstrap string
	// CacheTTL is how long an authenticated token is trusted without
	// asking the store again; revocation through this Service takes
	// effect at once regardless, and through another instance as soon
	// as its change notification calls Forget.
	CacheTTL time.Duration
	// TouchEvery is how often, at most, a token's last use is written.
	TouchEvery time.Duration
	// CacheSize bounds the number of cached tokens.
	CacheSize int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives failures to record a token's last use; nil
	// discards them.
	Logger *slog.Logger
}

// Service manages and authenticates API tokens. It is safe for concurrent
// use.
type Service struct {
	store     iotgate.TokenStore
	cfg       Config
	bootstrap *[sha256.Size]byte

	mu      sync.Mutex
	cache   map[[sha256.Size]byte]cached
	touched map[string]time.Time // token ID -> last use written
	// epoch counts Forget calls: a token read from the store before one
	// is not cached after it.
	epoch uint64
}

type cached struct {
	tok   *iotgate.Token
	until time.Time
}

// NewService returns a Service over store. Errors: invalid (a bootstrap
// token shorter than MinBootstrapLen).
func NewService(store iotgate.TokenStore, cfg Config) (*Service, error) {
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.TouchEvery <= 0 {
		cfg.TouchEvery = DefaultTouchEvery
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{store: store, cfg: cfg, cache: map[[sha256.Size]byte]cached{}, touched: map[string]time.Time{}}
	if cfg.Bootstrap != "" {
		if len(cfg.Bootstrap) < MinBootstrapLen {
			return nil, iotgate.Errorf(iotgate.EInvalid, "the bootstrap admin token must be at least %d characters", MinBootstrapLen)
		}
		h := Hash(cfg.Bootstrap)
		s.bootstrap = &h
	}
	return s, nil
}

// NewSecret returns a new token secret: Prefix and 256 random bits,
// base64url-encoded.
func NewSecret() string {
	b := make([]byte, secretBytes)
	rand.Read(b) // never fails (crypto/rand panics instead)
	return Prefix + base64.RawURLEncoding.EncodeToString(b)
}

// secretLen is the length of every secret NewSecret makes.
var secretLen = len(Prefix) + base64.RawURLEncoding.EncodedLen(secretBytes)

// wellFormed reports whether secret could be one NewSecret made: Prefix
// and secretLen base64url characters.
func wellFormed(secret string) bool {
	if len(secret) != secretLen || !strings.HasPrefix(secret, Prefix) {
		return false
	}
	for _, r := range secret[len(Prefix):] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// newID returns a token ID: random, so that IDs don't reveal how many
// tokens exist, and short enough to type.
func newID() string { return "tok_" + strings.ToLower(rand.Text()[:16]) }

// CreateRequest is what Create needs.
type CreateRequest struct {
	Name    string
	Scopes  []iotgate.Scope
	Devices iotgate.Selector
	// ExpiresIn 0 means the token does not expire.
	ExpiresIn time.Duration
	// By is the token that asks for this one (over the API); nil for the
	// operator (the command line), who may create any token.
	By *iotgate.Token
}

// Create creates a token and returns it with its secret, which is shown
// this once and not kept. A token can't create one broader than itself
// (see mayCreate). Errors: invalid, forbidden (broader than req.By),
// unavailable.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*iotgate.Token, string, error) {
	if req.ExpiresIn < 0 {
		return nil, "", iotgate.Errorf(iotgate.EInvalid, "expiry must be in the future")
	}
	now := s.cfg.Now().UTC()
	if err := mayCreate(req, now); err != nil {
		return nil, "", err
	}
	secret := NewSecret()
	h := Hash(secret)
	t := &iotgate.Token{
		ID: newID(), Name: strings.TrimSpace(req.Name), Scopes: req.Scopes, Devices: req.Devices,
		Hash: h[:], CreatedAt: now,
	}
	if t.Devices == nil {
		t.Devices = iotgate.Selector{}
	}
	if req.ExpiresIn > 0 {
		exp := now.Add(req.ExpiresIn)
		t.ExpiresAt = &exp
	}
	if err := t.Validate(); err != nil {
		return nil, "", err
	}
	if err := s.store.CreateToken(ctx, t); err != nil {
		return nil, "", err
	}
	return t, secret, nil
}

// mayCreate refuses (forbidden) a token that req.By could not itself use:
// one with a scope req.By lacks, one that selects a device outside req.By's
// selector, or one that outlives req.By. Otherwise a token limited to some
// devices, or about to expire, could mint itself a way around its limits.
func mayCreate(req CreateRequest, now time.Time) error {
	by := req.By
	if by == nil {
		return nil
	}
	for _, sc := range req.Scopes {
		if !by.Allows(sc) {
			return iotgate.Errorf(iotgate.EForbidden, "this token lacks the scope %s, so it can't give it", sc)
		}
	}
	if !iotgate.Selector(req.Devices).Within(by.Devices) {
		return iotgate.Errorf(iotgate.EForbidden, "this token may only create tokens limited to devices %s", by.Devices)
	}
	if by.ExpiresAt != nil && (req.ExpiresIn == 0 || now.Add(req.ExpiresIn).After(*by.ExpiresAt)) {
		return iotgate.Errorf(iotgate.EForbidden, "this token expires at %s: it may only create tokens that expire by then",
			by.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// Manages reports whether the token by may see and revoke the token t: t
// must be limited at least as much as by, that is, every label pair of
// by's selector is also in t's (t may have more). An unlimited token
// manages every token; a token limited to site=berlin manages those
// limited to site=berlin (site=berlin,room=lab too), not the unlimited
// ones nor those of site=paris. It is the rule of Create's selector
// check, so a token manages every token it can create.
func Manages(by, t *iotgate.Token) bool {
	return by == nil || t.Devices.Within(by.Devices)
}

// List returns every token, oldest first.
func (s *Service) List(ctx context.Context) ([]*iotgate.Token, error) { return s.store.Tokens(ctx) }

// Get returns a token. Errors: not_found.
func (s *Service) Get(ctx context.Context, id string) (*iotgate.Token, error) {
	if id == BootstrapID {
		return nil, iotgate.Errorf(iotgate.ENotFound, "token %s not found", id)
	}
	return s.store.Token(ctx, id)
}

// Current returns the token with this ID as it is now, for what outlives
// one request (an open event stream, a ticket). Errors: unauthorized (no
// such token, revoked, expired; the bootstrap token when none is
// configured), unavailable.
func (s *Service) Current(ctx context.Context, id string) (*iotgate.Token, error) {
	if id == BootstrapID {
		if s.bootstrap == nil {
			return nil, errUnauthorized()
		}
		return &iotgate.Token{ID: BootstrapID, Name: BootstrapName, Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Devices: iotgate.Selector{}}, nil
	}
	tok, err := s.store.Token(ctx, id)
	if iotgate.ErrorCode(err) == iotgate.ENotFound {
		return nil, errUnauthorized()
	}
	if err != nil {
		return nil, err
	}
	if !tok.Active(s.cfg.Now()) {
		return nil, errUnauthorized()
	}
	return tok, nil
}

// Revoke revokes a token; revoking a revoked token changes nothing. It
// takes effect at once for this Service (other instances notice at its
// change notification, or within CacheTTL at worst). Errors: not_found, invalid (the bootstrap token, which only
// its environment variable can withdraw).
func (s *Service) Revoke(ctx context.Context, id string) (*iotgate.Token, error) {
	if id == BootstrapID {
		return nil, iotgate.Errorf(iotgate.EInvalid, "the bootstrap token can't be revoked: unset IOTGATE_ADMIN_TOKEN and restart")
	}
	t, err := s.store.RevokeToken(ctx, id, s.cfg.Now().UTC())
	if err != nil {
		return nil, err
	}
	s.Forget(id)
	return t, nil
}

// Forget drops the cached token with this ID ("" for every token): the
// change notification of a token created, revoked or changed by another
// instance, or this one. Its next request reads it from the store again;
// a read from before the change that completes after it is not cached.
func (s *Service) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	if id == "" {
		clear(s.cache)
		clear(s.touched)
		return
	}
	for h, c := range s.cache {
		if c.tok.ID == id {
			delete(s.cache, h)
		}
	}
	delete(s.touched, id)
}

// errUnauthorized is the one answer to a bad token: clients learn nothing
// about whether it is unknown, expired or revoked.
func errUnauthorized() error {
	return iotgate.Errorf(iotgate.EUnauthorized, "missing, unknown, expired or revoked token")
}

// Authenticate returns the active token whose secret this is.
// Errors: unauthorized, unavailable (the store could not be asked).
func (s *Service) Authenticate(ctx context.Context, secret string) (*iotgate.Token, error) {
	if secret == "" {
		return nil, errUnauthorized()
	}
	h := Hash(secret)
	// Both sides are hashes of equal length, so the comparison takes the
	// same time whatever the secret's length or content.
	if s.bootstrap != nil && subtle.ConstantTimeCompare(h[:], s.bootstrap[:]) == 1 {
		return &iotgate.Token{ID: BootstrapID, Name: BootstrapName, Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Devices: iotgate.Selector{}}, nil
	}
	if !wellFormed(secret) {
		// No stored token has such a secret: a flood of junk costs no
		// store query.
		return nil, errUnauthorized()
	}
	now := s.cfg.Now()
	s.mu.Lock()
	c, ok := s.cache[h]
	epoch := s.epoch
	s.mu.Unlock()
	var t *iotgate.Token
	if ok && now.Before(c.until) {
		t = c.tok
	} else {
		// The lookup is by hash: timing tells an attacker at most
		// something about a hash of their own guess.
		var err error
		t, err = s.store.TokenByHash(ctx, h[:])
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			return nil, errUnauthorized()
		}
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(t.Hash, h[:]) != 1 {
			return nil, errUnauthorized()
		}
		s.remember(h, t, now, epoch)
	}
	if !t.Active(now) {
		return nil, errUnauthorized()
	}
	s.touch(ctx, t, now)
	return t.Clone(), nil
}

// remember caches t, read from the store in epoch, unless Forget was
// called since; a full cache is first swept of expired entries and, if
// still full, started over, which costs one store query per token.
func (s *Service) remember(h [sha256.Size]byte, t *iotgate.Token, now time.Time, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.epoch {
		return
	}
	if len(s.cache) >= s.cfg.CacheSize {
		for k, c := range s.cache {
			if !now.Before(c.until) {
				delete(s.cache, k)
			}
		}
		if len(s.cache) >= s.cfg.CacheSize {
			clear(s.cache)
		}
	}
	s.cache[h] = cached{tok: t, until: now.Add(s.cfg.CacheTTL)}
}

// touch records the token's use, at most once per TouchEvery: a write per
// request would cost more than the request. Failing to record it does not
// fail the request.
func (s *Service) touch(ctx context.Context, t *iotgate.Token, now time.Time) {
	s.mu.Lock()
	last, ok := s.touched[t.ID]
	if !ok && t.LastUsedAt != nil {
		last, ok = *t.LastUsedAt, true
	}
	due := !ok || now.Sub(last) >= s.cfg.TouchEvery
	if due {
		if len(s.touched) >= s.cfg.CacheSize {
			clear(s.touched)
		}
		s.touched[t.ID] = now
	}
	s.mu.Unlock()
	if !due {
		return
	}
	if err := s.store.TouchToken(ctx, t.ID, now.UTC()); err != nil {
		s.cfg.Logger.Warn("record token use", "token_id", t.ID, "err", err)
	}
}
