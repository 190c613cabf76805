package openai

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	mrand "math/rand/v2"
	"strconv"
	"unicode/utf8"
)

// AppendOutputLine appends l as one JSON line, ending in "\n", to dst: the
// bytes WriteOutputLine writes, without encoding/json's reflection and the
// second pass over the body. The body is validated and compacted; an
// invalid one is an error, and dst is then returned unchanged.
func AppendOutputLine(dst []byte, l *BatchOutputLine) ([]byte, error) {
	start := len(dst)
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, l.ID)
	dst = append(dst, `,"custom_id":`...)
	dst = appendString(dst, l.CustomID)
	dst = append(dst, `,"response":`...)
	if r := l.Response; r != nil {
		dst = append(dst, `{"status_code":`...)
		dst = strconv.AppendInt(dst, int64(r.StatusCode), 10)
		dst = append(dst, `,"request_id":`...)
		dst = appendString(dst, r.RequestID)
		dst = append(dst, `,"body":`...)
		if r.Body == nil {
			dst = append(dst, "null"...)
		} else {
			buf := bytes.NewBuffer(dst)
			if err := json.Compact(buf, r.Body); err != nil {
				return dst[:start], err
			}
			dst = buf.Bytes()
		}
		dst = append(dst, '}')
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"error":`...)
	if e := l.Error; e != nil {
		dst = append(dst, `{"code":`...)
		dst = appendString(dst, e.Code)
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, e.Message)
		dst = append(dst, '}')
	} else {
		dst = append(dst, "null"...)
	}
	return append(dst, '}', '\n'), nil
}

// appendString appends s as a JSON string, as encoding/json writes it
// with HTML escaping off: printable ASCII but '"' and '\\' as it is, the
// rest through encoding/json.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// IDSource makes output line ids ("batch_req_...", as OpenAI's) and
// response request ids ("req_..."), 32 random hex digits each, from a
// ChaCha8 stream seeded once from crypto/rand instead of a system call per
// id. Not safe for concurrent use.
type IDSource struct{ r *mrand.ChaCha8 }

// NewIDSource returns an IDSource with a fresh random seed.
func NewIDSource() *IDSource {
	var seed [32]byte
	_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails
	return &IDSource{r: mrand.NewChaCha8(seed)}
}

func (s *IDSource) id(prefix string) string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], s.r.Uint64())
	binary.LittleEndian.PutUint64(b[8:], s.r.Uint64())
	return prefix + hex.EncodeToString(b[:])
}

// LineID returns an output line id: "batch_req_" and 32 hex digits.
func (s *IDSource) LineID() string { return s.id("batch_req_") }

// RequestID returns a response's request_id: "req_" and 32 hex digits.
func (s *IDSource) RequestID() string { return s.id("req_") }
