package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"

	"github.com/iotgate/iotgate"
)

// refused reports why ip may not be a webhook's destination, or "" if it
// may: the gateway's own machine, its private networks and the cloud
// metadata address (169.254.169.254, link-local) are not for hire.
func refused(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	return ""
}

func errRefused(host string, ip netip.Addr, why string) error {
	msg := fmt.Sprintf("url's host %s resolves to %s, a %s address: webhooks may not reach it (IOTGATE_WEBHOOK_ALLOW_PRIVATE=1 allows it)", host, ip, why)
	if host == ip.String() {
		msg = fmt.Sprintf("url's host %s is a %s address: webhooks may not reach it (IOTGATE_WEBHOOK_ALLOW_PRIVATE=1 allows it)", host, why)
	}
	return &iotgate.Error{Code: iotgate.EInvalid, Detail: iotgate.DetailWebhookURLRefused, Message: msg}
}

// Resolver looks host names up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckURL checks a webhook's URL: http or https, and unless allowPrivate,
// a host none of whose addresses is refused. The dialer checks again at
// connect time (DNS may answer differently then). Errors: invalid (detail
// webhook_url_refused for a refused address), unavailable (the name
// doesn't resolve now).
func CheckURL(ctx context.Context, r Resolver, raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return iotgate.Errorf(iotgate.EInvalid, "url must be an http or https URL with a host")
	}
	if allowPrivate {
		return nil
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if why := refused(ip); why != "" {
			return errRefused(host, ip, why)
		}
		return nil
	}
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return iotgate.Errorf(iotgate.EInvalid, "url's host %s does not resolve", host)
		}
		return &iotgate.Error{Code: iotgate.EUnavailable, Message: "url's host " + host + " could not be resolved", Err: err}
	}
	for _, ip := range ips {
		if why := refused(ip); why != "" {
			return errRefused(host, ip, why)
		}
	}
	return nil
}

// dialControl is a net.Dialer Control function that refuses connections to
// refused addresses: it sees the address actually dialed, after DNS, so a
// name that resolved to a public address at creation and to 127.0.0.1
// now (DNS rebinding) is still refused.
func dialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook dial %s: %w", address, err)
	}
	if why := refused(ap.Addr()); why != "" {
		return fmt.Errorf("webhook dial %s: %w (%s)", address, errPrivate, why)
	}
	return nil
}

// errPrivate marks a connection refused by dialControl.
var errPrivate = errors.New("refused address")
