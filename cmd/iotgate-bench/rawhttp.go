package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The reads loads are sent by hand over kept-alive HTTP/1.1 connections
// rather than through net/http's client: the load generator shares the
// two cores with iotgate, and net/http's client took more CPU per GET
// state (0.037 ms) than iotgate took to answer it (0.032 ms), so the rate
// measured the generator as much as iotgate. A request here is one
// prebuilt write and a read of the status line, the headers and the body
// (discarded), the way wrk and similar tools do it.

// rawConn is one kept-alive HTTP/1.1 connection to iotgate.
type rawConn struct {
	conn net.Conn
	r    *bufio.Reader
	buf  []byte // the request being written
	host string
	auth string // "Bearer " + token
}

// maxRawHeaderBytes bounds what rawConn reads of an answer's status line
// and headers; maxRawErrBody what it keeps of a refused answer's body.
const (
	maxRawHeaderBytes = 64 << 10
	maxRawErrBody     = 4096
)

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

// readAnswer reads one answer: status line, headers, then a body of
// Content-Length bytes or chunked.
func (rc *rawConn) readAnswer(path string) error {
	line, err := rc.r.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("GET %s: status line: %w", path, err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return fmt.Errorf("GET %s: bad status line %q", path, line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return fmt.Errorf("GET %s: bad status line %q", path, line)
	}
	length, chunked, closing := int64(-1), false, false
	read := len(line)
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("GET %s: headers: %w", path, err)
		}
		if read += len(line); read > maxRawHeaderBytes {
			return fmt.Errorf("GET %s: headers over %d bytes", path, maxRawHeaderBytes)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return fmt.Errorf("GET %s: bad header %q", path, line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return fmt.Errorf("GET %s: bad Content-Length %q", path, value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	body := io.Discard
	var kept bytes.Buffer
	if status != 200 {
		body = &limitedWriter{w: &kept, n: maxRawErrBody}
	}
	switch {
	case chunked:
		err = rc.discardChunked(body)
	case length >= 0:
		_, err = io.CopyN(body, rc.r, length)
	default:
		return fmt.Errorf("GET %s: %d answer with neither Content-Length nor chunked body", path, status)
	}
	if err != nil {
		return fmt.Errorf("GET %s: body: %w", path, err)
	}
	if status != 200 {
		return fmt.Errorf("GET %s: %d %s", path, status, kept.Bytes())
	}
	if closing {
		return fmt.Errorf("GET %s: %w", path, errRawClosed)
	}
	return nil
}

// discardChunked reads a chunked body (RFC 9112 §7.1) and its trailers,
// writing the data to w.
func (rc *rawConn) discardChunked(w io.Writer) error {
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			break
		}
		if _, err := io.CopyN(w, rc.r, n); err != nil {
			return err
		}
		if _, err := rc.r.Discard(2); err != nil { // the chunk's CRLF
			return err
		}
	}
	for { // trailers, up to the empty line
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

// limitedWriter keeps the first n bytes written to it and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.n -= k
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
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
