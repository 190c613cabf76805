package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/infergate/infergate"
)

// The "fast" transport: a minimal HTTP/1.1 client for plain-http
// benchmarks. The load generator shares the machine with the server it
// measures, so its CPU per request matters: net/http spends two goroutines
// (readLoop, writeLoop), a Request, a Response, header maps and several
// channel handoffs on every request. The fast client writes a request that
// payload.go serialized once, with a single conn.Write, and parses the
// response in place from a per-connection bufio.Reader: no goroutines, no
// maps, no allocations per request in steady state.
//
// It supports exactly what the generator needs: POST of a fixed body,
// keep-alive, responses framed by Content-Length, chunked transfer coding
// or connection close, 1xx interim responses (skipped), and it reports the
// status and whether Retry-After was present. It speaks plain TCP only
// (no TLS, no proxy, no URL userinfo).
//
// Known difference from net/http: nothing reads an idle connection, so a
// response a server sends unasked on an idle connection (some servers send
// 408 before closing one) would be taken as the answer to the next request
// on it; net/http's readLoop discards such a connection. Go servers,
// infergate's included, never do that.

const (
	// fastReadBuffer is the per-connection read buffer. Responses and lines
	// longer than this are fine (bodies are discarded through it; long
	// header lines are skipped), it only sets the size of the reads.
	fastReadBuffer = 4 << 10
	// fastDialTimeout and fastKeepAlive match newTransport's dialer.
	fastDialTimeout = 5 * time.Second
	fastKeepAlive   = 30 * time.Second
	// maxHeaderLines bounds the header lines of one response (and the
	// trailer lines of a chunked body).
	maxHeaderLines = 1000
)

// fastStaleAfter: a connection that has been idle at least this long may
// have been closed by the server's idle timeout while it sat in the pool.
// If a request on such a connection fails with EOF or a reset before any
// response byte arrived, it is retried once on a fresh connection (net/http
// gets the same effect by watching idle connections with its readLoop
// goroutine). Requests on busier connections are never retried: a server
// that drops a request without answering shows up as an error, as with
// net/http. A variable for tests.
var fastStaleAfter = time.Second

var (
	errClientClosed     = errors.New("loadgen: fast client closed")
	errMalformedStatus  = errors.New("loadgen: malformed HTTP status line")
	errMalformedHeader  = errors.New("loadgen: malformed HTTP header")
	errTooManyHeaders   = errors.New("loadgen: too many HTTP header lines")
	errBadContentLength = errors.New("loadgen: bad Content-Length")
	errBadChunk         = errors.New("loadgen: malformed chunked body")
	errUnexpected101    = errors.New("loadgen: unexpected 101 Switching Protocols")
)

// fastConn is one keep-alive connection and its read buffer. It is used by
// one request at a time.
type fastConn struct {
	nc        net.Conn
	br        *bufio.Reader
	idleSince time.Time // when it last went back to the pool
	reused    bool      // it has served a request before
}

// fastClient is a pool of keep-alive connections to one server. Every
// request takes an idle connection or dials a new one; since a connection
// is dialed only when none is idle, the number of connections never exceeds
// the number of concurrent requests (bounded by Config.MaxInFlight).
type fastClient struct {
	addr    string // host:port to dial
	reqs    *[infergate.NumClasses][][]byte
	timeout time.Duration
	ctx     context.Context // its end closes every connection
	stop    func() bool     // unregisters the close-on-cancel of ctx

	mu     sync.Mutex
	idle   []*fastConn // LIFO: the most recently used connection first
	conns  map[*fastConn]struct{}
	closed bool
}

// newFastClient returns a client for addr (host:port) that sends the
// pre-serialized requests reqs[class][body]. Each request is bounded by
// timeout and by its context; when ctx ends, every connection, busy ones
// included, is closed, which fails the requests in flight at once.
func newFastClient(ctx context.Context, addr string, reqs *[infergate.NumClasses][][]byte, timeout time.Duration) *fastClient {
	c := &fastClient{addr: addr, reqs: reqs, timeout: timeout, ctx: ctx, conns: map[*fastConn]struct{}{}}
	c.stop = context.AfterFunc(ctx, c.closeAll)
	return c
}

// close closes every connection; requests after it fail.
func (c *fastClient) close() {
	c.stop()
	c.closeAll()
}

func (c *fastClient) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for fc := range c.conns {
		fc.nc.Close() // safe while another goroutine reads or writes it
	}
	clear(c.conns)
	clear(c.idle)
	c.idle = c.idle[:0]
}

// get returns an idle connection, or dials one when none is idle or fresh
// is set.
func (c *fastClient) get(ctx context.Context, deadline time.Time, fresh bool) (*fastConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClientClosed
	}
	if n := len(c.idle); n > 0 && !fresh {
		fc := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return fc, nil
	}
	c.mu.Unlock()

	d := net.Dialer{Timeout: fastDialTimeout, Deadline: deadline, KeepAlive: fastKeepAlive}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	fc := &fastConn{nc: nc, br: bufio.NewReaderSize(nc, fastReadBuffer)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		nc.Close()
		return nil, errClientClosed
	}
	c.conns[fc] = struct{}{}
	return fc, nil
}

// put returns a connection to the idle pool.
func (c *fastClient) put(fc *fastConn) {
	fc.reused = true
	fc.idleSince = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		fc.nc.Close()
		return
	}
	c.idle = append(c.idle, fc)
}

// discard closes a connection and forgets it.
func (c *fastClient) discard(fc *fastConn) {
	fc.nc.Close()
	c.mu.Lock()
	delete(c.conns, fc)
	c.mu.Unlock()
}

// numConns reports the open connections and how many of them are idle.
func (c *fastClient) numConns() (open, idle int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns), len(c.idle)
}

// do sends request body of class cl and reads the response. It returns the
// HTTP status (0 with a non-nil error on a transport error or timeout) and
// whether the response carried Retry-After, and the server's own time for
// the request from its X-Infergate-Server-Ms header (-1 without one).
func (c *fastClient) do(ctx context.Context, cl infergate.Class, body int) (int, bool, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, -1, err
	}
	req := c.reqs[cl][body]
	now := time.Now()
	deadline := now.Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for attempt := 0; ; attempt++ {
		fc, err := c.get(ctx, deadline, attempt > 0)
		if err != nil {
			return 0, false, -1, err
		}
		stale := fc.reused && now.Sub(fc.idleSince) >= fastStaleAfter
		var stop func() bool
		if done := ctx.Done(); done != nil && done != c.ctx.Done() {
			// A context of its own (c.ctx's end already closes every
			// connection; Run's requests all use c.ctx).
			nc := fc.nc
			stop = context.AfterFunc(ctx, func() { nc.Close() })
		}
		resp, started, err := fc.roundTrip(req, deadline)
		if stop != nil {
			stop()
		}
		if err != nil {
			c.discard(fc)
			if attempt == 0 && stale && !started && isConnClosed(err) && ctx.Err() == nil {
				continue // the server closed it while idle: retry on a new one
			}
			if cerr := ctx.Err(); cerr != nil {
				err = cerr
			}
			return 0, false, -1, err
		}
		if resp.keep {
			c.put(fc)
		} else {
			c.discard(fc)
		}
		return resp.status, resp.retryAfter, resp.server, nil
	}
}

// isConnClosed reports whether err says the peer closed the connection.
func isConnClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// roundTrip writes req and reads one response. started reports whether any
// byte of the response arrived.
func (fc *fastConn) roundTrip(req []byte, deadline time.Time) (resp respInfo, started bool, err error) {
	if err := fc.nc.SetDeadline(deadline); err != nil {
		return resp, false, err
	}
	if _, err := fc.nc.Write(req); err != nil {
		return resp, false, err
	}
	if _, err := fc.br.Peek(1); err != nil {
		return resp, false, err
	}
	resp, err = readResponse(fc.br)
	return resp, true, err
}

// respInfo is what the generator needs from a response.
type respInfo struct {
	status     int
	retryAfter bool          // a non-empty Retry-After header
	server     time.Duration // X-Infergate-Server-Ms (-1: none or unparsable)
	keep       bool          // the connection can carry another request
}

// readResponse reads one response to a POST from br, headers and body, and
// discards the body. On success, br is positioned at the start of the next
// response; keep is false when the connection must not be reused
// (Connection: close, HTTP/1.0 without keep-alive, or a body delimited by
// the end of the connection).
func readResponse(br *bufio.Reader) (respInfo, error) {
	for {
		r, h, err := readHead(br)
		if err != nil {
			return r, err
		}
		switch {
		case r.status == 101:
			return r, errUnexpected101
		case r.status < 200: // interim response (100 Continue, 103 Early Hints): no body
			continue
		case r.status == 204 || r.status == 304: // no body, whatever the headers say
			return r, nil
		case h.teSet && h.chunked:
			return r, discardChunked(br)
		case h.teSet:
			// A transfer coding other than chunked last: the body runs
			// to the end of the connection (RFC 9112, 6.3).
			r.keep = false
			return r, discardToEOF(br)
		case h.contentLength >= 0:
			return r, discardN(br, h.contentLength)
		default:
			r.keep = false
			return r, discardToEOF(br)
		}
	}
}

// headInfo is what readHead gathers from the header lines.
type headInfo struct {
	contentLength int64 // -1: none
	teSet         bool  // Transfer-Encoding present
	chunked       bool  // its last coding is chunked
}

var (
	hdrContentLength    = []byte("Content-Length")
	hdrTransferEncoding = []byte("Transfer-Encoding")
	hdrConnection       = []byte("Connection")
	hdrRetryAfter       = []byte("Retry-After")
	hdrServerMS         = []byte(ServerTimeHeader)
	tokClose            = []byte("close")
	tokKeepAlive        = []byte("keep-alive")
	tokChunked          = []byte("chunked")
)

// readHead reads a status line and header lines, up to and including the
// empty line.
func readHead(br *bufio.Reader) (respInfo, headInfo, error) {
	h := headInfo{contentLength: -1}
	r := respInfo{server: -1}
	line, long, err := readLine(br)
	if err != nil {
		return r, h, err
	}
	if long {
		return r, h, errMalformedStatus
	}
	minor, status, ok := parseStatusLine(line)
	if !ok {
		return r, h, errMalformedStatus
	}
	r.status = status
	r.keep = minor >= 1
	keepAlive, closeConn := false, false
	for n := 0; ; n++ {
		if n == maxHeaderLines {
			return r, h, errTooManyHeaders
		}
		line, long, err := readLine(br)
		if err != nil {
			return r, h, err
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold continuation of the previous line: the headers we
			// interpret never use it; skip.
			if long {
				if err := skipLine(br); err != nil {
					return r, h, err
				}
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return r, h, errMalformedHeader
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		switch {
		case bytes.EqualFold(name, hdrContentLength):
			n, ok := parseContentLength(value)
			if !ok || long || (h.contentLength >= 0 && h.contentLength != n) {
				return r, h, errBadContentLength
			}
			h.contentLength = n
		case bytes.EqualFold(name, hdrTransferEncoding):
			if long {
				return r, h, errMalformedHeader
			}
			h.teSet = true
			// The last coding decides; a later header line continues
			// the list of an earlier one.
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				if tok = trimOWS(tok); len(tok) > 0 {
					h.chunked = bytes.EqualFold(tok, tokChunked)
				}
			}
		case bytes.EqualFold(name, hdrConnection):
			if long {
				return r, h, errMalformedHeader
			}
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				closeConn = closeConn || bytes.EqualFold(tok, tokClose)
				keepAlive = keepAlive || bytes.EqualFold(tok, tokKeepAlive)
			}
		case bytes.EqualFold(name, hdrRetryAfter):
			r.retryAfter = r.retryAfter || len(value) > 0
		case bytes.EqualFold(name, hdrServerMS) && !long:
			r.server = parseServerMS(string(value))
		}
		if long {
			if err := skipLine(br); err != nil {
				return r, h, err
			}
		}
	}
	if minor == 0 && keepAlive {
		r.keep = true
	}
	if closeConn {
		r.keep = false
	}
	if h.teSet && h.contentLength >= 0 {
		// Both framings: Transfer-Encoding wins, and the message may
		// have been smuggled; do not reuse the connection.
		r.keep = false
	}
	return r, h, nil
}

// parseStatusLine parses "HTTP/1.x SSS[ reason]" and returns x and SSS.
func parseStatusLine(line []byte) (minor, status int, ok bool) {
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || !isDigit(line[7]) || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return 0, 0, false
	}
	for _, c := range line[9:12] {
		if !isDigit(c) {
			return 0, 0, false
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, 0, false
	}
	return int(line[7] - '0'), status, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseContentLength parses a non-negative decimal of at most 18 digits.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// trimOWS trims spaces and tabs at both ends.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// readLine returns the next line without its line ending, as a slice of
// br's buffer valid until the next read. A line longer than the buffer is
// returned truncated with long set, and its rest is still unread: the
// caller must skipLine.
func readLine(br *bufio.Reader) (line []byte, long bool, err error) {
	line, err = br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return line, true, nil
	case err == io.EOF && len(line) > 0:
		return nil, false, io.ErrUnexpectedEOF
	case err != nil:
		return nil, false, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, false, nil
}

// skipLine discards the rest of a long line, its line ending included.
func skipLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			return nil
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != bufio.ErrBufferFull:
			return err
		}
	}
}

// discardChunked discards a chunked body, trailers included.
func discardChunked(br *bufio.Reader) error {
	for {
		line, long, err := readLine(br)
		if err != nil {
			return unexpectedEOF(err)
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return errBadChunk
		}
		if long {
			// Chunk extensions longer than the buffer: skip them.
			if err := skipLine(br); err != nil {
				return err
			}
		}
		if size == 0 {
			break
		}
		if err := discardN(br, size); err != nil {
			return err
		}
		line, long, err = readLine(br)
		if err != nil {
			return unexpectedEOF(err)
		}
		if len(line) != 0 || long {
			return errBadChunk
		}
	}
	// Trailer section, up to the empty line.
	for n := 0; ; n++ {
		if n == maxHeaderLines {
			return errTooManyHeaders
		}
		line, long, err := readLine(br)
		if err != nil {
			return unexpectedEOF(err)
		}
		if long {
			if err := skipLine(br); err != nil {
				return err
			}
			continue
		}
		if len(line) == 0 {
			return nil
		}
	}
}

// parseChunkSize parses the hex size at the start of a chunk-size line,
// before any chunk extension.
func parseChunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// discardToEOF discards everything up to the end of the connection.
func discardToEOF(br *bufio.Reader) error {
	for {
		if _, err := br.Discard(max(br.Buffered(), 1)); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// discardN discards exactly n bytes; a short body is io.ErrUnexpectedEOF.
func discardN(br *bufio.Reader, n int64) error {
	for n > 0 {
		k := int(min(n, 1<<30))
		if _, err := br.Discard(k); err != nil {
			return unexpectedEOF(err)
		}
		n -= int64(k)
	}
	return nil
}
