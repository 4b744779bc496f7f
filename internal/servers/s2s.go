package servers

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"sync"
)

// S2SPort is the port federated servers listen on for server-to-server
// streams. Without DNS there are no SRV records, so a server connects to
// port 5269 of its peer's domain; with an IP-literal domain it needs no
// name resolution at all (both Prosody and ejabberd connect to the IP
// directly). So every federated instance listens on 5269, each on IP
// addresses of its own in 127/8 (all loopback on Linux, no setup needed).
const S2SPort = 5269

var (
	s2sMu  sync.Mutex
	s2sOut = map[string]bool{} // handed out by this process
)

// FreeS2SIP returns an address in 127/8 (never 127.0.0.1) whose port
// S2SPort nobody listens on now, for use as a federated server's or
// component's domain and as one of its XMPPOptions.S2SAddrs. Addresses are
// random over about 16 million, so parallel test processes don't collide.
func FreeS2SIP() (string, error) {
	s2sMu.Lock()
	defer s2sMu.Unlock()
	for range 100 {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<24))
		if err != nil {
			return "", err
		}
		b := n.Int64()
		a, c, d := byte(b>>16), byte(b>>8), byte(b)
		// .0 and .255 look like network and broadcast addresses;
		// 127.0.0.x is where everything else listens.
		if a == 0 || d == 0 || d == 255 {
			continue
		}
		ip := net.IPv4(127, a, c, d).String()
		if s2sOut[ip] || !s2sFree(ip) {
			continue
		}
		s2sOut[ip] = true
		return ip, nil
	}
	return "", errors.New("no free loopback address for s2s")
}

// s2sFree reports whether ip:S2SPort can be listened on now.
func s2sFree(ip string) bool {
	l, err := net.Listen("tcp", s2sAddr(ip))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// s2sAddr formats ip:S2SPort.
func s2sAddr(ip string) string { return net.JoinHostPort(ip, strconv.Itoa(S2SPort)) }

// checkS2SAddrs refuses anything but IPv4 loopback addresses: the
// instances must never listen beyond the machine.
func checkS2SAddrs(ips []string) error {
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil || ip.To4() == nil || !ip.IsLoopback() || ip.String() != s {
			return fmt.Errorf("s2s address %q: want an IPv4 loopback address like 127.1.2.3", s)
		}
	}
	return nil
}
