package devices

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// fakeAccounts is an AccountProvisioner in memory, whose calls fail with
// createErr and deleteErr when set.
type fakeAccounts struct {
	mu                   sync.Mutex
	accounts             map[string]string
	deleted              []string
	createErr, deleteErr error
}

func (f *fakeAccounts) CreateAccount(_ context.Context, jid, password string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return f.createErr
	}
	if f.accounts == nil {
		f.accounts = map[string]string{}
	}
	f.accounts[jid] = password
	return nil
}

func (f *fakeAccounts) DeleteAccount(_ context.Context, jid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deleteErr != nil {
		return f.deleteErr
	}
	f.deleted = append(f.deleted, jid)
	delete(f.accounts, jid)
	return nil
}

// refusingStore is a device store whose CreateDevice fails: a
// registration that fails after its account was made.
type refusingStore struct{ *memstore.DeviceStore }

func (refusingStore) CreateDevice(context.Context, *iotgate.Device) error {
	return errors.New("insert device: connection reset")
}

func TestRegisterWithAccount(t *testing.T) {
	serverDown := &iotgate.Error{Code: iotgate.EUnavailable, Detail: DetailAccountServerUnavailable, Message: "down"}
	exists := &iotgate.Error{Code: iotgate.EConflict, Detail: DetailAccountExists, Message: "exists"}
	tests := []struct {
		name       string
		jid        string
		password   string
		noAccounts bool
		createErr  error
		refuse     bool // the store refuses the device
		registered bool // the JID is registered already
		wantCode   string
		wantDetail string
		// wantAccount: the account is left on the server; wantDeleted:
		// it was made and removed again.
		wantAccount, wantDeleted bool
	}{
		{name: "OKGenerated", jid: "dev@example.com", wantAccount: true},
		{name: "OKGiven", jid: "dev@example.com", password: "a given password", wantAccount: true},
		{name: "ErrNotConfigured", jid: "dev@example.com", noAccounts: true, wantCode: iotgate.EUnprocessable, wantDetail: DetailAccountsUnavailable},
		{name: "ErrShortPassword", jid: "dev@example.com", password: "short", wantCode: iotgate.EInvalid},
		{name: "ErrControlInPassword", jid: "dev@example.com", password: "line one\nline two", wantCode: iotgate.EInvalid},
		{name: "ErrDomain", jid: "dev@other.example", wantCode: iotgate.EForbidden},
		{name: "ErrRegistered", jid: "dev@example.com", registered: true, wantCode: iotgate.EConflict},
		{name: "ErrAccountExists", jid: "dev@example.com", createErr: exists, wantCode: iotgate.EConflict, wantDetail: DetailAccountExists},
		{name: "ErrServerDown", jid: "dev@example.com", createErr: serverDown, wantCode: iotgate.EUnavailable, wantDetail: DetailAccountServerUnavailable},
		{name: "ErrStoreAccountRemoved", jid: "dev@example.com", refuse: true, wantCode: iotgate.EInternal, wantDeleted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			mem := memstore.NewDeviceStore()
			var store iotgate.DeviceStore = mem
			if tt.refuse {
				store = refusingStore{mem}
			}
			accounts := &fakeAccounts{createErr: tt.createErr}
			domains, err := NewDomainAllowList([]string{"example.com"})
			if err != nil {
				t.Fatal(err)
			}
			cfg := ServiceConfig{DeviceDomains: domains, Accounts: accounts}
			if tt.noAccounts {
				cfg.Accounts = nil
			}
			svc := NewService(store, anySchema{}, cfg)
			if tt.registered {
				if _, err := svc.Register(ctx, &iotgate.Device{JID: tt.jid, Schema: "s"}); err != nil {
					t.Fatal(err)
				}
			}
			d, pw, err := svc.RegisterWithAccount(ctx, &iotgate.Device{JID: tt.jid, Schema: "s"}, tt.password)
			if tt.wantCode != "" {
				var e *iotgate.Error
				if iotgate.ErrorCode(err) != tt.wantCode || (tt.wantDetail != "" && (!errors.As(err, &e) || e.Detail != tt.wantDetail)) {
					t.Fatalf("err = %v, want code %s detail %q", err, tt.wantCode, tt.wantDetail)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if _, ok := accounts.accounts[tt.jid]; ok != tt.wantAccount {
				t.Errorf("account left on the server = %v, want %v", ok, tt.wantAccount)
			}
			if got := len(accounts.deleted) == 1; got != tt.wantDeleted {
				t.Errorf("account removed again = %v (%v), want %v", got, accounts.deleted, tt.wantDeleted)
			}
			if !tt.wantAccount {
				return
			}
			if d.JID != tt.jid || accounts.accounts[tt.jid] != pw {
				t.Errorf("device %s, password %q; server has %q", d.JID, pw, accounts.accounts[tt.jid])
			}
			switch {
			case tt.password != "" && pw != tt.password:
				t.Errorf("password = %q, want the one given", pw)
			case tt.password == "" && len(pw) != GeneratedPasswordLen:
				t.Errorf("generated password %q has %d characters, want %d", pw, len(pw), GeneratedPasswordLen)
			}
		})
	}
}

func TestRegisterWithAccountPasswordsDiffer(t *testing.T) {
	svc := NewService(memstore.NewDeviceStore(), anySchema{}, ServiceConfig{Accounts: &fakeAccounts{}})
	seen := map[string]bool{}
	for _, j := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		_, pw, err := svc.RegisterWithAccount(context.Background(), &iotgate.Device{JID: j, Schema: "s"}, "")
		if err != nil {
			t.Fatal(err)
		}
		if seen[pw] {
			t.Errorf("password %q generated twice", pw)
		}
		seen[pw] = true
	}
}

func TestDeleteWithAccount(t *testing.T) {
	down := &iotgate.Error{Code: iotgate.EUnavailable, Detail: DetailAccountServerUnavailable, Message: "down"}
	tests := []struct {
		name       string
		jid        string
		noAccounts bool
		deleteErr  error
		wantCode   string
		// wantKept: the device is still registered afterwards.
		wantKept bool
	}{
		{name: "OK", jid: "dev@example.com"},
		{name: "ErrNotRegistered", jid: "nobody@example.com", wantCode: iotgate.ENotFound, wantKept: true},
		{name: "ErrNotConfigured", jid: "dev@example.com", noAccounts: true, wantCode: iotgate.EUnprocessable, wantKept: true},
		{name: "ErrServerDown", jid: "dev@example.com", deleteErr: down, wantCode: iotgate.EUnavailable, wantKept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			accounts := &fakeAccounts{}
			svc := NewService(memstore.NewDeviceStore(), anySchema{}, ServiceConfig{Accounts: accounts})
			if _, _, err := svc.RegisterWithAccount(ctx, &iotgate.Device{JID: "dev@example.com", Schema: "s"}, ""); err != nil {
				t.Fatal(err)
			}
			accounts.deleteErr = tt.deleteErr
			if tt.noAccounts {
				svc.cfg.Accounts = nil
			}
			err := svc.DeleteWithAccount(ctx, tt.jid)
			if got := iotgate.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("err = %v, want code %q", err, tt.wantCode)
			}
			_, derr := svc.Device(ctx, "dev@example.com")
			if kept := derr == nil; kept != tt.wantKept {
				t.Errorf("device kept = %v (%v), want %v", kept, derr, tt.wantKept)
			}
			if _, left := accounts.accounts["dev@example.com"]; left != tt.wantKept {
				t.Errorf("account left = %v, want %v", left, tt.wantKept)
			}
			if tt.name == "ErrNotRegistered" && len(accounts.deleted) != 0 {
				t.Errorf("accounts deleted for an unregistered JID: %v", accounts.deleted)
			}
		})
	}
}

func TestValidatePassword(t *testing.T) {
	tests := []struct {
		name, password string
		ok             bool
	}{
		{"OK", "correct horse battery", true},
		{"OKUnicode", "pässwörd-ünïcödé", true},
		{"OKMax", strings.Repeat("p", MaxPasswordLen), true},
		{"ErrShort", strings.Repeat("p", MinPasswordLen-1), false},
		{"ErrLong", strings.Repeat("p", MaxPasswordLen+1), false},
		{"ErrNewline", "correct horse\nbattery", false},
		{"ErrNUL", "correct horse\x00battery", false},
		{"ErrNotUTF8", "correct horse \xffbattery", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePassword(tt.password)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidatePassword(%q) = %v, want ok %v", tt.password, err, tt.ok)
			}
			if err != nil && iotgate.ErrorCode(err) != iotgate.EInvalid {
				t.Errorf("code = %s, want invalid", iotgate.ErrorCode(err))
			}
		})
	}
}
