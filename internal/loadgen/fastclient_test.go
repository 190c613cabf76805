package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate"
)

func TestReadResponse(t *testing.T) {
	big := strings.Repeat("x", 3*fastReadBuffer+17)
	long := strings.Repeat("a", 2*fastReadBuffer)
	for _, tc := range []struct {
		name       string
		in         string
		status     int
		retryAfter bool
		keep       bool
		rest       string // what must be left unread (the next response)
		err        bool
	}{
		{name: "content-length", in: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhelloNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "no reason, bare LF", in: "HTTP/1.1 200\nContent-Length: 2\n\nokNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "case and spaces", in: "HTTP/1.1 200 OK\r\ncontent-LENGTH:\t 3 \r\n\r\nabcNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "same content-length twice", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "empty body", in: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "chunked last of codings", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "chunked, no trailers, LF only", in: "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n1f\n" + strings.Repeat("z", 31) + "\n0\n\nNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "chunked beats content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nNEXT", status: 200, keep: false, rest: "NEXT"},
		{name: "connection close", in: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, keep: false, rest: "NEXT"},
		{name: "connection close in a list", in: "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, keep: false, rest: "NEXT"},
		{name: "http/1.0", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, keep: false, rest: "NEXT"},
		{name: "http/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "429 retry-after", in: "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 11\r\n\r\noverloaded\nNEXT", status: 429, retryAfter: true, keep: true, rest: "NEXT"},
		{name: "429 empty retry-after", in: "HTTP/1.1 429 Too Many Requests\r\nretry-after: \r\nContent-Length: 0\r\n\r\nNEXT", status: 429, keep: true, rest: "NEXT"},
		{name: "204 has no body", in: "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nNEXT", status: 204, keep: true, rest: "NEXT"},
		{name: "interim responses skipped", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 503 Unavailable\r\nContent-Length: 2\r\n\r\nnoNEXT", status: 503, keep: true, rest: "NEXT"},
		{name: "body to end of connection", in: "HTTP/1.1 200 OK\r\n\r\nall of this is body", status: 200, keep: false, rest: ""},
		{name: "unknown coding: body to end", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nall of this is body", status: 200, keep: false, rest: ""},
		{name: "body larger than the buffer", in: "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big + "NEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "chunk larger than the buffer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(big)), 16) + "\r\n" + big + "\r\n0\r\n\r\nNEXT", status: 200, keep: true, rest: "NEXT"},
		{name: "header line longer than the buffer", in: "HTTP/1.1 200 OK\r\nX-Long: " + long + "\r\nRetry-After: " + long + "\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, retryAfter: true, keep: true, rest: "NEXT"},
		{name: "obs-fold continuation", in: "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 2\r\n\r\nokNEXT", status: 200, keep: true, rest: "NEXT"},

		{name: "malformed status: letters", in: "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", err: true},
		{name: "malformed status: no space", in: "HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n", err: true},
		{name: "malformed status: protocol", in: "HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", err: true},
		{name: "malformed status: http/2", in: "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", err: true},
		{name: "malformed status: short", in: "HTTP/1.1 20\r\n\r\n", err: true},
		{name: "malformed status: 099", in: "HTTP/1.1 099 Low\r\n\r\n", err: true},
		{name: "malformed status: not http", in: "hello world\r\n\r\n", err: true},
		{name: "malformed status: too long", in: "HTTP/1.1 200 " + long + "\r\n\r\n", err: true},
		{name: "header without colon", in: "HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\nok", err: true},
		{name: "bad content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", err: true},
		{name: "negative content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", err: true},
		{name: "conflicting content-lengths", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk", err: true},
		{name: "short body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", err: true},
		{name: "eof in headers", in: "HTTP/1.1 200 OK\r\nContent-Len", err: true},
		{name: "eof after status", in: "HTTP/1.1 200 OK\r\n", err: true},
		{name: "empty", in: "", err: true},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", err: true},
		{name: "chunk without CRLF", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n", err: true},
		{name: "truncated chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", err: true},
		{name: "no last chunk", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", err: true},
		{name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.in), fastReadBuffer)
			r, err := readResponse(br)
			if tc.err {
				if err == nil {
					t.Fatalf("got %+v, want an error", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.status != tc.status || r.retryAfter != tc.retryAfter || r.keep != tc.keep {
				t.Errorf("got %+v, want status %d retryAfter %v keep %v", r, tc.status, tc.retryAfter, tc.keep)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.rest {
				t.Errorf("left %q unread, want %q", rest, tc.rest)
			}
		})
	}
}

// scriptServer is a raw TCP server: serve runs once per accepted
// connection and closes it when it returns.
type scriptServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func newScriptServer(t *testing.T, serve func(n int64, c net.Conn, br *bufio.Reader)) *scriptServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			n := s.accepted.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// readRequest reads one request; it returns its head and body.
func readRequest(br *bufio.Reader) (head string, body []byte, err error) {
	var sb strings.Builder
	n := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", nil, err
		}
		sb.WriteString(line)
		if line == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body = make([]byte, n)
	_, err = io.ReadFull(br, body)
	return sb.String(), body, err
}

// testRequests is a set of pre-serialized requests for a fastClient: one
// body, normal class only.
func testRequests() *[infergate.NumClasses][][]byte {
	var reqs [infergate.NumClasses][][]byte
	reqs[infergate.ClassNormal] = [][]byte{[]byte("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n" + ClassHeader + ": normal\r\n\r\nhello")}
	return &reqs
}

func newTestFastClient(t *testing.T, addr string, timeout time.Duration) *fastClient {
	c := newFastClient(context.Background(), addr, testRequests(), timeout)
	t.Cleanup(c.close)
	return c
}

func TestFastClientKeepAliveChunked(t *testing.T) {
	var served atomic.Int64
	s := newScriptServer(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			head, body, err := readRequest(br)
			if err != nil {
				return
			}
			if !strings.HasPrefix(head, "POST /x HTTP/1.1\r\n") || !strings.Contains(head, ClassHeader+": normal\r\n") || string(body) != "hello" {
				t.Errorf("bad request %q %q", head, body)
				return
			}
			served.Add(1)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"+
				strconv.FormatInt(2*fastReadBuffer, 16)+"\r\n"+strings.Repeat("y", 2*fastReadBuffer)+"\r\n0\r\n\r\n")
		}
	})
	c := newTestFastClient(t, s.ln.Addr().String(), time.Second)
	for i := range 5 {
		status, _, _, err := c.do(context.Background(), infergate.ClassNormal, 0)
		if err != nil || status != 200 {
			t.Fatalf("request %d: status %d, err %v", i, status, err)
		}
	}
	if n := s.accepted.Load(); n != 1 || served.Load() != 5 {
		t.Errorf("%d connections for %d requests, want 1 for 5", n, served.Load())
	}
	if open, idle := c.numConns(); open != 1 || idle != 1 {
		t.Errorf("open %d idle %d, want 1 idle connection", open, idle)
	}
	c.close()
	if open, idle := c.numConns(); open != 0 || idle != 0 {
		t.Errorf("after close: open %d idle %d", open, idle)
	}
	if _, _, _, err := c.do(context.Background(), infergate.ClassNormal, 0); err == nil {
		t.Error("request after close: want an error")
	}
}

func TestFastClientConnectionClose(t *testing.T) {
	s := newScriptServer(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy")
		// The server then closes; a client reusing the connection would fail.
	})
	c := newTestFastClient(t, s.ln.Addr().String(), time.Second)
	for i := range 3 {
		status, retryAfter, _, err := c.do(context.Background(), infergate.ClassNormal, 0)
		if err != nil || status != 429 || !retryAfter {
			t.Fatalf("request %d: status %d retryAfter %v err %v", i, status, retryAfter, err)
		}
		if open, _ := c.numConns(); open != 0 {
			t.Fatalf("request %d: %d connections kept after Connection: close", i, open)
		}
	}
	if n := s.accepted.Load(); n != 3 {
		t.Errorf("%d connections for 3 requests, want 3", n)
	}
}

func TestFastClientServerClosesMidResponse(t *testing.T) {
	s := newScriptServer(t, func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			if n == 1 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it")
				return // close mid-body
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c := newTestFastClient(t, s.ln.Addr().String(), time.Second)
	status, _, _, err := c.do(context.Background(), infergate.ClassNormal, 0)
	if err == nil || status != 0 {
		t.Fatalf("status %d, err %v: want a transport error", status, err)
	}
	if open, idle := c.numConns(); open != 0 || idle != 0 {
		t.Fatalf("open %d idle %d after a broken response: the connection must be closed, not reused", open, idle)
	}
	status, _, _, err = c.do(context.Background(), infergate.ClassNormal, 0)
	if err != nil || status != 200 {
		t.Fatalf("next request: status %d, err %v", status, err)
	}
	if n := s.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestFastClientMalformedStatus(t *testing.T) {
	s := newScriptServer(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n")
		br.ReadByte() // wait for the client to close
	})
	c := newTestFastClient(t, s.ln.Addr().String(), time.Second)
	status, _, _, err := c.do(context.Background(), infergate.ClassNormal, 0)
	if !errors.Is(err, errMalformedStatus) || status != 0 {
		t.Fatalf("status %d, err %v: want a malformed status error", status, err)
	}
	if open, _ := c.numConns(); open != 0 {
		t.Errorf("%d connections kept after a malformed response", open)
	}
}

func TestFastClientTimeoutAndCancel(t *testing.T) {
	s := newScriptServer(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		br.ReadByte() // never answer; return when the client closes
	})
	c := newTestFastClient(t, s.ln.Addr().String(), 100*time.Millisecond)
	t0 := time.Now()
	status, _, _, err := c.do(context.Background(), infergate.ClassNormal, 0)
	if err == nil || status != 0 || time.Since(t0) > time.Second {
		t.Errorf("status %d err %v after %v: want a timeout after 100ms", status, err, time.Since(t0))
	}

	// A request context other than the client's is watched per request.
	c = newTestFastClient(t, s.ln.Addr().String(), 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	t0 = time.Now()
	status, _, _, err = c.do(ctx, infergate.ClassNormal, 0)
	if !errors.Is(err, context.Canceled) || status != 0 || time.Since(t0) > time.Second {
		t.Errorf("status %d err %v after %v: want canceled after 50ms", status, err, time.Since(t0))
	}

	// Ending the client's context closes every connection, busy ones too.
	cctx, ccancel := context.WithCancel(context.Background())
	c = newFastClient(cctx, s.ln.Addr().String(), testRequests(), 10*time.Second)
	defer c.close()
	time.AfterFunc(50*time.Millisecond, ccancel)
	t0 = time.Now()
	status, _, _, err = c.do(cctx, infergate.ClassNormal, 0)
	if !errors.Is(err, context.Canceled) || status != 0 || time.Since(t0) > time.Second {
		t.Errorf("status %d err %v after %v: want canceled after 50ms", status, err, time.Since(t0))
	}
	if open, _ := c.numConns(); open != 0 {
		t.Errorf("%d connections open after cancel", open)
	}
}

// A connection the server closed while it sat idle in the pool is retried
// once on a new connection, not reported as an error.
func TestFastClientStaleIdleConn(t *testing.T) {
	defer func(d time.Duration) { fastStaleAfter = d }(fastStaleAfter)
	fastStaleAfter = 20 * time.Millisecond
	closed := make(chan struct{})
	s := newScriptServer(t, func(n int64, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if n == 1 {
				c.Close() // idle timeout, as far as the client can tell
				close(closed)
				return
			}
		}
	})
	c := newTestFastClient(t, s.ln.Addr().String(), time.Second)
	if status, _, _, err := c.do(context.Background(), infergate.ClassNormal, 0); err != nil || status != 200 {
		t.Fatalf("status %d, err %v", status, err)
	}
	<-closed
	time.Sleep(2 * fastStaleAfter)
	if status, _, _, err := c.do(context.Background(), infergate.ClassNormal, 0); err != nil || status != 200 {
		t.Fatalf("request on a stale connection: status %d, err %v; want a retry on a new one", status, err)
	}
	if n := s.accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// The requests the fast transport writes are what net/http's server
// expects, for both payload formats (checkBody validates them).
func TestFastRequestsParse(t *testing.T) {
	for _, format := range []string{"json", "binary"} {
		cfg, err := Config{URL: "http://example.com:8080/", Model: "m/1", Rate: 1, Duration: time.Second, Payload: format}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		pl, err := buildPayload(cfg)
		if err != nil {
			t.Fatal(err)
		}
		bodies := append([][]byte(nil), pl.bodies...)
		pl.buildRequests("/v2/models/m%2F1/infer", "example.com:8080", []infergate.Class{infergate.ClassBulk, infergate.ClassUrgent})
		if pl.requests[infergate.ClassNormal] != nil {
			t.Errorf("%s: requests built for a class not in the mix", format)
		}
		for _, cl := range []infergate.Class{infergate.ClassBulk, infergate.ClassUrgent} {
			for i, raw := range pl.requests[cl] {
				req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
				if err != nil {
					t.Fatalf("%s %v: %v", format, cl, err)
				}
				body, _ := io.ReadAll(req.Body)
				if req.Method != "POST" || req.RequestURI != "/v2/models/m%2F1/infer" || req.Host != "example.com:8080" ||
					req.Header.Get(ClassHeader) != cl.String() || req.ContentLength != int64(len(body)) {
					t.Errorf("%s %v: %s %s host %q header %v", format, cl, req.Method, req.RequestURI, req.Host, req.Header)
				}
				if !bytes.Equal(body, bodies[i]) || !bytes.Equal(pl.bodies[i], bodies[i]) {
					t.Errorf("%s %v: body %d differs", format, cl, i)
				}
				if msg := checkBody(req.Header, body); msg != "" {
					t.Errorf("%s %v: %s", format, cl, msg)
				}
			}
		}
	}
}

// cannedServer answers every request with the same small 200 response.
// It allocates nothing per request, so allocation counts measure the
// client alone.
func cannedServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"ok\":\"yes\"}\n")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReaderSize(c, 64<<10)
				for {
					n := -1
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
						if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
							v, _ := parseContentLength(trimOWS(bytes.TrimRight(v, "\r\n")))
							n = int(v)
						}
					}
					if n < 0 {
						return
					}
					if _, err := br.Discard(n); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// benchRequester builds the requester Run would use for url.
func benchRequester(t testing.TB, ctx context.Context, url, transport string) requester {
	t.Helper()
	cfg, err := Config{URL: url, Model: "m", Rate: 1, Duration: time.Second, Transport: transport, Seed: 1}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	pl, err := buildPayload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	snd, closeConns, err := newRequester(ctx, cfg, url+"/v2/models/m/infer", pl, []infergate.Class{infergate.ClassNormal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeConns)
	return snd
}

// In steady state the fast transport allocates nothing per request.
func TestFastClientZeroAllocs(t *testing.T) {
	ctx := context.Background()
	snd := benchRequester(t, ctx, cannedServer(t), TransportFast)
	var failed error
	allocs := testing.AllocsPerRun(200, func() {
		if status, _, _, err := snd.do(ctx, infergate.ClassNormal, 0); err != nil || status != 200 {
			failed = errors.Join(failed, err, errors.New("status "+strconv.Itoa(status)))
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs > 0 {
		t.Errorf("%v allocations per request, want 0", allocs)
	}
}

// BenchmarkSend sends requests one after another to an httptest server
// that answers a fixed small body (server=httptest; its allocations count
// too, since it runs in this process) and to a raw server that allocates
// nothing (server=canned: the allocations are the client's). cpu-ns/op is
// the process's user+system CPU per request, client and server together.
func BenchmarkSend(b *testing.B) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model_name":"m","outputs":[{"name":"logits","shape":[1,2],"datatype":"FP32","data":[0.5,0.5]}]}`)
	}))
	defer hs.Close()
	canned := cannedServer(b)
	for _, server := range []struct{ name, url string }{{"httptest", hs.URL}, {"canned", canned}} {
		for _, tr := range transports {
			b.Run("transport="+tr+"/server="+server.name, func(b *testing.B) {
				ctx := context.Background()
				snd := benchRequester(b, ctx, server.url, tr)
				b.ReportAllocs()
				cpu0 := ProcessCPUSeconds()
				for b.Loop() {
					if status, _, _, err := snd.do(ctx, infergate.ClassNormal, 0); err != nil || status != 200 {
						b.Fatalf("status %d, err %v", status, err)
					}
				}
				b.ReportMetric((ProcessCPUSeconds()-cpu0)*1e9/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// The fast transport is plain http only: https URLs, and a caller's
// Client, get net/http.
func TestRequesterChoice(t *testing.T) {
	for _, tc := range []struct {
		url, transport string
		client         *http.Client
		fast           bool
	}{
		{"http://127.0.0.1:1", "", nil, true},
		{"http://127.0.0.1:1", TransportFast, nil, true},
		{"http://127.0.0.1:1", TransportNetHTTP, nil, false},
		{"http://127.0.0.1:1", TransportFast, http.DefaultClient, false},
		{"https://127.0.0.1:1", TransportFast, nil, false},
	} {
		cfg, err := Config{URL: tc.url, Model: "m", Rate: 1, Duration: time.Second, Transport: tc.transport, Client: tc.client}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		pl, err := buildPayload(cfg)
		if err != nil {
			t.Fatal(err)
		}
		snd, closeConns, err := newRequester(context.Background(), cfg, tc.url+"/v2/models/m/infer", pl, []infergate.Class{infergate.ClassNormal})
		if err != nil {
			t.Fatal(err)
		}
		closeConns()
		if _, fast := snd.(*fastClient); fast != tc.fast {
			t.Errorf("%s transport %q client %v: fast %v, want %v", tc.url, tc.transport, tc.client != nil, fast, tc.fast)
		}
	}
}
