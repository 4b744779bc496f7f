package devices

import (
	"fmt"
	"slices"
	"strings"

	"github.com/iotgate/iotgate"
	"mellium.im/xmpp/jid"
)

// DomainAllowList is the set of XMPP domains whose devices iotgate serves:
// with federation, a device may sit on any server, and an operator may
// trust only some. The zero value allows every domain.
type DomainAllowList struct {
	domains []string // sorted, normalized; empty: any
}

// NewDomainAllowList returns the allow-list of domains (JID domainparts,
// normalized as JIDs are, so "Example.COM" matches devices of
// example.com). No domains allows every domain. Errors: invalid, for an
// entry that is not a bare domain.
func NewDomainAllowList(domains []string) (DomainAllowList, error) {
	var l DomainAllowList
	for _, d := range domains {
		j, err := jid.Parse(d)
		if err != nil || j.Localpart() != "" || j.Resourcepart() != "" {
			return DomainAllowList{}, iotgate.Errorf(iotgate.EInvalid, "%q is not a domain such as example.com", d)
		}
		l.domains = append(l.domains, j.Domainpart())
	}
	slices.Sort(l.domains)
	l.domains = slices.Compact(l.domains)
	return l, nil
}

// Any reports whether every domain is allowed.
func (l DomainAllowList) Any() bool { return len(l.domains) == 0 }

// Domains returns the allowed domains, sorted; none means any.
func (l DomainAllowList) Domains() []string { return slices.Clone(l.domains) }

// String lists the domains, comma-separated, or "any".
func (l DomainAllowList) String() string {
	if l.Any() {
		return "any"
	}
	return strings.Join(l.domains, ",")
}

// AllowsDomain reports whether devices of domain (a normalized
// domainpart, as in a parsed JID) are allowed.
func (l DomainAllowList) AllowsDomain(domain string) bool {
	_, found := slices.BinarySearch(l.domains, domain)
	return l.Any() || found
}

// Check returns nil if the device JID s (bare or full) is on an allowed
// domain. Errors: invalid (not a JID), forbidden with Detail
// iotgate.DetailDeviceDomainNotAllowed, naming the allowed domains.
func (l DomainAllowList) Check(s string) error {
	if l.Any() {
		return nil
	}
	j, err := jid.Parse(s)
	if err != nil {
		return &iotgate.Error{Code: iotgate.EInvalid, Message: fmt.Sprintf("%q is not a valid JID: %v", s, err)}
	}
	if l.AllowsDomain(j.Domainpart()) {
		return nil
	}
	return &iotgate.Error{Code: iotgate.EForbidden, Detail: iotgate.DetailDeviceDomainNotAllowed,
		Message: fmt.Sprintf("devices on %s are not accepted here; allowed device domains: %s", j.Domainpart(), strings.Join(l.domains, ", "))}
}
