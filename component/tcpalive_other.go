//go:build !linux

package component

import (
	"net"
	"time"
)

// tcpConnAlive can't ask the kernel here: it never knows, and a missed
// keepalive answer counts as death unless bytes still flow.
func tcpConnAlive(net.Conn, time.Duration) (alive, known bool) { return false, false }
