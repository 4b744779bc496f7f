package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// The reads loads are sent by hand over kept-alive HTTP/1.1 connections
// rather than through net/http's client: the load generator shares the
// two cores with iotgate, and net/http's client took more CPU per GET
// state (0.037 ms) than iotgate took to answer it (0.032 ms), so the rate
// measured the generator as much as iotgate. A request here is one
// prebuilt write and a read of the answer with net/http's parser
// (http.ReadResponse; the body discarded), without the client's
// connection pool and goroutines, the way wrk and similar tools do it.

// rawConn is one kept-alive HTTP/1.1 connection to iotgate.
type rawConn struct {
	conn net.Conn
	r    *bufio.Reader
	buf  []byte // the request being written
	host string
	auth string // "Bearer " + token
}

// maxRawErrBody bounds what rawConn keeps of a refused answer's body.
const maxRawErrBody = 4096

// errRawClosed is a connection the server closed after its answer
// (Connection: close): the answer counts, the connection is dialed again.
var errRawClosed = errors.New("connection closed by the server")

func dialRaw(ctx context.Context, addr, host, token string) (*rawConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{conn: c, r: bufio.NewReaderSize(c, 32<<10), host: host, auth: "Bearer " + token}, nil
}

func (rc *rawConn) close() { _ = rc.conn.Close() }

// get sends GET path and reads the answer to its end. It returns nil for
// a 200, an error saying what came instead otherwise; errRawClosed
// (wrapped, after a 200) when the connection can't be used again.
func (rc *rawConn) get(path string, deadline time.Time) error {
	if err := rc.conn.SetDeadline(deadline); err != nil {
		return err
	}
	b := append(rc.buf[:0], "GET "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, rc.host...)
	b = append(b, "\r\nAuthorization: "...)
	b = append(b, rc.auth...)
	b = append(b, "\r\n\r\n"...)
	rc.buf = b
	if _, err := rc.conn.Write(b); err != nil {
		return err
	}
	return rc.readAnswer(path)
}

// readAnswer reads one answer to its end with net/http's own parser
// (status line, headers, a body of Content-Length bytes or chunked).
func (rc *rawConn) readAnswer(path string) error {
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxRawErrBody))
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("GET %s: body: %w", path, err)
	}
	if resp.Close {
		return fmt.Errorf("GET %s: %w", path, errRawClosed)
	}
	return nil
}

// rawLoad sends GET path(i) to the server at base (http://host:port)
// from c connections for d, each sending its next request as soon as the
// last answer has been read, and returns the successful requests per
// second and their latencies, as load does. A failed request is counted
// and its connection dialed again; the load is an error only if none
// succeeded.
func rawLoad(ctx context.Context, base, token string, c int, d time.Duration, path func(i int) string) (loadResult, error) {
	res := loadResult{lat: &latencies{}}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return res, fmt.Errorf("raw load: base URL %q: want http://host:port", base)
	}
	var (
		next   atomic.Int64
		failed atomic.Int64
		mu     sync.Mutex
		wg     sync.WaitGroup
	)
	fail := func(err error) {
		failed.Add(1)
		mu.Lock()
		if res.firstErr == nil {
			res.firstErr = err
		}
		mu.Unlock()
	}
	start := time.Now()
	deadline := start.Add(d)
	for range c {
		wg.Go(func() {
			var (
				rc  *rawConn
				own []time.Duration
			)
			defer func() {
				if rc != nil {
					rc.close()
				}
				mu.Lock()
				res.lat.d = append(res.lat.d, own...)
				mu.Unlock()
			}()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if rc == nil {
					c, err := dialRaw(ctx, u.Host, u.Host, token)
					if err != nil {
						fail(err)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					rc = c
				}
				p := path(int(next.Add(1)))
				t0 := time.Now()
				err := rc.get(p, t0.Add(opTimeout))
				switch {
				case err == nil:
					own = append(own, time.Since(t0))
				case errors.Is(err, errRawClosed):
					own = append(own, time.Since(t0))
					rc.close()
					rc = nil
				default:
					fail(err)
					rc.close()
					rc = nil
				}
			}
		})
	}
	wg.Wait()
	return finished(ctx, res, start, failed.Load(), "requests")
}
