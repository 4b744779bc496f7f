package main

import (
	"net"
	"strings"
)

// openToNetwork reports whether the listening address addr (host:port,
// as IOTGATE_METRICS_ADDR) may be reachable from other machines: an empty
// host (":9090") or an unspecified one (0.0.0.0, ::) listens on every
// interface, and a host name or non-loopback IP on a network one. Only a
// loopback IP or "localhost" is private to the machine. The metrics
// address serves /metrics and /debug/pprof without authentication, so
// iotgate warns at start when this is true.
func openToNetwork(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true // not ours to judge; net.Listen will say
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip == nil || !ip.IsLoopback()
}
