package devices

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

func TestNewDomainAllowList(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr bool
	}{
		{"None", nil, nil, false},
		{"Sorted", []string{"b.example", "a.example"}, []string{"a.example", "b.example"}, false},
		{"Normalized", []string{"Sensors.EXAMPLE.org"}, []string{"sensors.example.org"}, false},
		{"Deduplicated", []string{"a.example", "A.example"}, []string{"a.example"}, false},
		{"IPLiteral", []string{"127.0.0.3"}, []string{"127.0.0.3"}, false},
		{"ErrJID", []string{"dev@a.example"}, nil, true},
		{"ErrFullJID", []string{"a.example/r"}, nil, true},
		{"ErrEmpty", []string{""}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewDomainAllowList(tt.in)
			if tt.wantErr {
				if iotgate.ErrorCode(err) != iotgate.EInvalid {
					t.Fatalf("err = %v, want invalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := l.Domains(); !slices.Equal(got, tt.want) {
				t.Errorf("Domains() = %v, want %v", got, tt.want)
			}
			if l.Any() != (len(tt.want) == 0) {
				t.Errorf("Any() = %v with %v", l.Any(), tt.want)
			}
		})
	}
}

func TestDomainAllowListCheck(t *testing.T) {
	list, err := NewDomainAllowList([]string{"example.com", "sensors.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		list     DomainAllowList
		jid      string
		wantCode string
	}{
		{"AnyAllowsAll", DomainAllowList{}, "dev@elsewhere.example", ""},
		{"Bare", list, "dev@example.com", ""},
		{"Full", list, "dev@sensors.example.org/r1", ""},
		{"CaseInsensitive", list, "dev@EXAMPLE.com", ""},
		{"ErrOtherDomain", list, "dev@evil.example", iotgate.EForbidden},
		// Exact domains only: a subdomain is another server.
		{"ErrSubdomain", list, "dev@sub.example.com", iotgate.EForbidden},
		{"ErrParentDomain", list, "dev@example.org", iotgate.EForbidden},
		{"ErrNotAJID", list, "dev@", iotgate.EInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.list.Check(tt.jid)
			if got := iotgate.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("Check(%q) = %v, want code %q", tt.jid, err, tt.wantCode)
			}
			if tt.wantCode != iotgate.EForbidden {
				return
			}
			var e *iotgate.Error
			if !errors.As(err, &e) || e.Detail != iotgate.DetailDeviceDomainNotAllowed {
				t.Errorf("detail of %v, want %s", err, iotgate.DetailDeviceDomainNotAllowed)
			}
			if msg := iotgate.ErrorMessage(err); !strings.Contains(msg, "example.com, sensors.example.org") {
				t.Errorf("message %q does not name the allowed domains", msg)
			}
		})
	}
}

func TestRegisterDeviceDomains(t *testing.T) {
	list, err := NewDomainAllowList([]string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		list     DomainAllowList
		jid      string
		wantCode string
	}{
		{"OK", list, "dev@example.com", ""},
		{"AnyDomain", DomainAllowList{}, "dev@other.example", ""},
		{"ErrDomainNotAllowed", list, "dev@other.example", iotgate.EForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memstore.NewDeviceStore()
			svc := NewService(store, anySchema{}, ServiceConfig{DeviceDomains: tt.list})
			_, err := svc.Register(context.Background(), &iotgate.Device{JID: tt.jid, Schema: "s"})
			if got := iotgate.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("Register(%s) = %v, want code %q", tt.jid, err, tt.wantCode)
			}
			jids, _ := store.DeviceJIDs(context.Background(), "", 10)
			if created := len(jids) == 1; created != (tt.wantCode == "") {
				t.Errorf("created %v", jids)
			}
		})
	}
}
