//go:build linux

package component

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// tcpConnAlive asks the kernel (TCP_INFO) whether the peer's TCP stack
// is alive. It is, unless what the kernel sends it goes unanswered: data
// retransmitted after a timeout, or window probes (the peer's receive
// window is shut) unanswered, with no acknowledgement within the last
// `within`. A live stack answers even when its application is too busy to
// read: its window shuts, and it answers the probes; so a busy server is
// alive here, a dead host or a cut path is not. known is false when the
// kernel can't say (not a TCP connection).
func tcpConnAlive(conn net.Conn, within time.Duration) (alive, known bool) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return false, false
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return false, false
	}
	var info *unix.TCPInfo
	cerr := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return false, false
	}
	if info.Retransmits == 0 && info.Probes == 0 {
		return true, true
	}
	return time.Duration(info.Last_ack_recv)*time.Millisecond < within, true
}
