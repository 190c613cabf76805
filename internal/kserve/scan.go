package kserve

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/infergate/infergate"
)

// This file holds a small, strict JSON scanner. It validates the JSON
// grammar (RFC 8259) for everything it reads or skips, never recurses
// deeper than maxJSONDepth and never allocates for the common case of a
// string without escapes. Tensor data arrays are parsed by data.go on top
// of it.

const (
	// maxJSONDepth bounds the nesting of objects and arrays anywhere in a
	// request or response, including nested tensor data.
	maxJSONDepth = 64
	// maxNumberLen bounds the length of one JSON number token. Longer
	// numbers are rejected: no tensor element or parameter needs them, and
	// the bound keeps the exact (big.Rat) FP16 tie-breaking cheap.
	maxNumberLen = 1024
)

type scanner struct {
	b []byte
	i int
}

func invalid(format string, args ...any) *infergate.Error {
	return infergate.Errorf(infergate.EInvalid, format, args...)
}

// describe returns a short printable description of the byte at s.i.
func (s *scanner) describe() string {
	if s.i >= len(s.b) {
		return "end of input"
	}
	c := s.b[s.i]
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// syntaxErr reports that what was expected at the current offset.
func (s *scanner) syntaxErr(what string) *infergate.Error {
	return invalid("malformed JSON at offset %d: expected %s, found %s", s.i, what, s.describe())
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\n', '\r', '\t':
			s.i++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c || s.i >= len(s.b) {
		return s.syntaxErr(strconv.QuoteRune(rune(c)))
	}
	s.i++
	return nil
}

// end checks that only whitespace is left.
func (s *scanner) end() error {
	if s.peek() != 0 || s.i < len(s.b) {
		return s.syntaxErr("end of JSON")
	}
	return nil
}

// more is the iteration step of an object or array whose opening bracket
// has been consumed: it consumes the separating comma (unless first) and
// reports true when another member follows, or consumes the closing bracket
// and reports false.
func (s *scanner) more(closing byte, first *bool) (bool, error) {
	c := s.peek()
	if s.i >= len(s.b) {
		return false, s.syntaxErr(fmt.Sprintf("',' or %q", closing))
	}
	if c == closing {
		s.i++
		return false, nil
	}
	if !*first {
		if c != ',' {
			return false, s.syntaxErr(fmt.Sprintf("',' or %q", closing))
		}
		s.i++
	}
	*first = false
	return true, nil
}

// key reads an object key and the colon after it.
func (s *scanner) key() ([]byte, error) {
	k, err := s.str()
	if err != nil {
		return nil, err
	}
	if err := s.expect(':'); err != nil {
		return nil, err
	}
	return k, nil
}

// str reads a JSON string and returns its contents. Strings without escapes
// or non-ASCII bytes are returned as a sub-slice of the input; others are
// decoded (by encoding/json, which also maps invalid UTF-8 to U+FFFD).
func (s *scanner) str() ([]byte, error) {
	if s.peek() != '"' {
		return nil, s.syntaxErr("string")
	}
	start := s.i
	for i := start + 1; i < len(s.b); i++ {
		c := s.b[i]
		if c == '"' {
			s.i = i + 1
			return s.b[start+1 : i], nil
		}
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return s.strSlow(start)
		}
	}
	s.i = len(s.b)
	return nil, s.syntaxErr("closing '\"'")
}

func (s *scanner) strSlow(start int) ([]byte, error) {
	for i := start + 1; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			var v string
			if err := json.Unmarshal(s.b[start:i+1], &v); err != nil {
				return nil, invalid("malformed JSON at offset %d: invalid string", start)
			}
			s.i = i + 1
			return []byte(v), nil
		case c == '\\':
			i++ // skip the escaped byte; json.Unmarshal validates escapes
		case c < 0x20:
			s.i = i
			return nil, s.syntaxErr("string character (control characters must be escaped)")
		}
	}
	s.i = len(s.b)
	return nil, s.syntaxErr("closing '\"'")
}

// literal consumes word (true, false or null) at the current offset.
func (s *scanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.syntaxErr(word)
	}
	s.i += len(word)
	return nil
}

// boolean reads true or false.
func (s *scanner) boolean() (bool, error) {
	switch s.peek() {
	case 't':
		return true, s.literal("true")
	case 'f':
		return false, s.literal("false")
	}
	return false, s.syntaxErr("true or false")
}

// skip validates and skips one JSON value of any kind.
func (s *scanner) skip(depth int) error {
	switch c := s.peek(); c {
	case '{', '[':
		if depth >= maxJSONDepth {
			return invalid("malformed JSON at offset %d: nesting deeper than %d", s.i, maxJSONDepth)
		}
		s.i++
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		first := true
		for {
			ok, err := s.more(closing, &first)
			if err != nil {
				return err
			}
			if !ok {
				return nil
			}
			if c == '{' {
				if _, err := s.key(); err != nil {
					return err
				}
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
		}
	case '"':
		_, err := s.str()
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		var n number
		return s.number(&n)
	}
}

// raw validates and skips one value and returns its bytes.
func (s *scanner) raw() ([]byte, error) {
	s.ws()
	start := s.i
	if err := s.skip(0); err != nil {
		return nil, err
	}
	return s.b[start:s.i], nil
}

// number is a scanned JSON number: its value is ±mant × 10^exp, plus any
// digits that did not fit in mant. It holds no pointers (the token is kept
// as offsets into the scanner's input) so that filling it in costs no GC
// write barriers.
type number struct {
	mant uint64
	exp  int
	neg  bool
	// dropInt and dropFrac report that nonzero digits of the integer or
	// fraction part did not fit in mant (zeros that did not fit are
	// accounted for in exp, so they keep the value exact).
	dropInt, dropFrac bool
	start, end        int // the token is src[start:end]
}

func (n *number) tok(src []byte) []byte { return src[n.start:n.end] }

const mantCutoff = (1<<64 - 1) / 10 // 1844674407370955161

// number scans a JSON number at the current offset.
//
// The fast path accumulates up to 19 significant digits without overflow
// checks; longer numbers are rescanned by numberSlow.
func (s *scanner) number(n *number) error {
	s.ws()
	b := s.b
	i := s.i
	start := i
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	var mant uint64
	exp := 0
	nd := 0 // digits accumulated (leading fraction zeros included)
	if i < len(b) && b[i] >= '1' && b[i] <= '9' {
		for ; i < len(b); i++ {
			d := b[i] - '0'
			if d > 9 {
				break
			}
			mant = mant*10 + uint64(d)
			nd++
		}
	} else if i < len(b) && b[i] == '0' {
		i++
	} else {
		return s.numberSlow(n, start)
	}
	if i < len(b) && b[i] == '.' {
		i++
		fs := i
		if nd <= 11 && len(b)-i >= 8 {
			if v, ok := eightDigits(binary.LittleEndian.Uint64(b[i:])); ok {
				mant = mant*100_000_000 + v
				i += 8
			}
		}
		for ; i < len(b); i++ {
			d := b[i] - '0'
			if d > 9 {
				break
			}
			mant = mant*10 + uint64(d)
		}
		if i == fs {
			return s.numberSlow(n, start)
		}
		nd += i - fs
		exp = fs - i
	}
	if i < len(b) && b[i]|0x20 == 'e' {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		es := i
		ev := 0
		for ; i < len(b) && i-es < 8; i++ {
			d := b[i] - '0'
			if d > 9 {
				break
			}
			ev = ev*10 + int(d)
		}
		if i == es || (i < len(b) && b[i]-'0' <= 9) {
			return s.numberSlow(n, start)
		}
		if eneg {
			ev = -ev
		}
		exp += ev
	}
	if nd > 19 {
		return s.numberSlow(n, start)
	}
	// Field by field: a composite literal is built on the stack and copied
	// with wide moves, which stalls on store forwarding in this hot path.
	n.mant, n.exp, n.neg = mant, exp, neg
	n.dropInt, n.dropFrac = false, false
	n.start, n.end = start, i
	s.i = i
	return nil
}

// eightDigits parses 8 ASCII digits packed little-endian in v (the first
// digit in the low byte) with a few multiplications instead of a chain of
// eight. ok is false unless all 8 bytes are digits.
func eightDigits(v uint64) (uint64, bool) {
	const ones = 0x0101010101010101
	// A byte is a digit iff its high nibble is 3 and adding 6 keeps it so.
	if v&(0xf0*ones) != 0x30*ones || (v+0x06*ones)&(0xf0*ones) != 0x30*ones {
		return 0, false
	}
	v -= 0x30 * ones
	v = (v*10 + v>>8) & 0x00ff00ff00ff00ff     // pairs: 10*d0+d1 in bytes 0, 2, 4, 6
	v = (v*100 + v>>16) & 0x0000ffff0000ffff   // quads in 16-bit lanes 0 and 2
	v = (v*10000 + v>>32) & 0x00000000ffffffff // all eight
	return v, true
}

// numberSlow scans a number of any length, or reports a syntax error.
func (s *scanner) numberSlow(n *number, start int) error {
	b := s.b
	i := start
	*n = number{}
	if i < len(b) && b[i] == '-' {
		n.neg = true
		i++
	}
	if i >= len(b) {
		s.i = i
		return s.syntaxErr("number")
	}
	var mant uint64
	exp := 0
	switch c := b[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		for ; i < len(b); i++ {
			d := b[i] - '0'
			if d > 9 {
				break
			}
			if mant < mantCutoff || (mant == mantCutoff && d <= 5) {
				mant = mant*10 + uint64(d)
			} else {
				exp++
				if d != 0 {
					n.dropInt = true
				}
			}
		}
	default:
		s.i = i
		if i == start {
			return s.syntaxErr("value")
		}
		return s.syntaxErr("digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		fs := i
		for ; i < len(b); i++ {
			d := b[i] - '0'
			if d > 9 {
				break
			}
			if mant < mantCutoff || (mant == mantCutoff && d <= 5) {
				mant = mant*10 + uint64(d)
				exp--
			} else if d != 0 {
				n.dropFrac = true
			}
		}
		if i == fs {
			s.i = i
			return s.syntaxErr("digit after '.'")
		}
	}
	if i < len(b) && b[i]|0x20 == 'e' {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		es := i
		ev := 0
		for ; i < len(b); i++ {
			d := b[i] - '0'
			if d > 9 {
				break
			}
			if ev < 100_000_000 {
				ev = ev*10 + int(d)
			}
		}
		if i == es {
			s.i = i
			return s.syntaxErr("exponent digit")
		}
		if eneg {
			ev = -ev
		}
		exp += ev
	}
	if i-start > maxNumberLen {
		s.i = start
		return invalid("malformed JSON at offset %d: number longer than %d bytes", start, maxNumberLen)
	}
	n.mant, n.exp, n.start, n.end = mant, exp, start, i
	s.i = i
	return nil
}

// intErr says why an integer conversion failed.
type intErr uint8

const (
	intOK intErr = iota
	intNotInteger
	intOverflow
)

// integer returns the magnitude and sign of an integral number.
func (n *number) integer() (mag uint64, neg bool, e intErr) {
	if n.dropFrac {
		return 0, false, intNotInteger
	}
	if n.mant == 0 {
		return 0, n.neg, intOK
	}
	m, x := n.mant, n.exp
	for ; x < 0; x++ {
		if m%10 != 0 {
			return 0, false, intNotInteger
		}
		m /= 10
	}
	if n.dropInt {
		return 0, false, intOverflow
	}
	for ; x > 0; x-- {
		if m > mantCutoff {
			return 0, false, intOverflow
		}
		m *= 10
	}
	return m, n.neg, intOK
}

// signed converts n to a signed integer of the given width in bits.
func (n *number) signed(bits uint) (int64, intErr) {
	mag, neg, e := n.integer()
	if e != intOK {
		return 0, e
	}
	limit := uint64(1) << (bits - 1)
	if neg {
		if mag > limit {
			return 0, intOverflow
		}
		return -int64(mag-1) - 1, intOK // no overflow at mag == 1<<63
	}
	if mag >= limit {
		return 0, intOverflow
	}
	return int64(mag), intOK
}

// unsigned converts n to an unsigned integer of the given width in bits.
func (n *number) unsigned(bits uint) (uint64, intErr) {
	mag, neg, e := n.integer()
	if e != intOK {
		return 0, e
	}
	if neg && mag != 0 {
		return 0, intOverflow
	}
	if bits < 64 && mag >= uint64(1)<<bits {
		return 0, intOverflow
	}
	return mag, intOK
}

var pow10f64 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

var pow10f32 = [...]float32{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10}

// float64 converts n (scanned from src) to the nearest float64. ok is
// false when the value is out of range (its magnitude rounds to infinity).
func (n *number) float64(src []byte) (float64, bool) {
	if !n.dropInt && !n.dropFrac && n.mant < 1<<53 && n.exp >= -22 && n.exp <= 22 {
		// Both operands are exact, so one IEEE operation rounds correctly.
		f := float64(n.mant)
		if n.exp < 0 {
			f /= pow10f64[-n.exp]
		} else {
			f *= pow10f64[n.exp]
		}
		if n.neg {
			f = -f
		}
		return f, true
	}
	f, err := strconv.ParseFloat(string(n.tok(src)), 64)
	return f, err == nil
}

// float32 converts n (scanned from src) to the nearest float32 (correctly
// rounded from the decimal, not via a double rounding). ok is false when
// out of range.
func (n *number) float32(src []byte) (float32, bool) {
	if !n.dropInt && !n.dropFrac {
		if n.mant < 1<<24 && n.exp >= -10 && n.exp <= 10 {
			f := float32(n.mant)
			if n.exp < 0 {
				f /= pow10f32[-n.exp]
			} else {
				f *= pow10f32[n.exp]
			}
			if n.neg {
				f = -f
			}
			return f, true
		}
		if n.mant < 1<<53 && n.exp >= -22 && n.exp <= 22 {
			d := float64(n.mant) // exact operands: one correctly rounded operation
			if n.exp < 0 {
				d /= pow10f64[-n.exp]
			} else {
				d *= pow10f64[n.exp]
			}
			// Rounding the correctly rounded float64 to float32 gives the
			// correctly rounded float32 unless the float64 sits exactly on
			// a float32 midpoint (the decimal may lie on either side of
			// it). Midpoints have the low 29 fraction bits equal to 1<<28.
			bits := math.Float64bits(d)
			be := int(bits>>52) & 0x7ff
			if be >= 1023-126 && be <= 1023+127 && bits&(1<<29-1) != 1<<28 {
				if f := float32(d); f <= math.MaxFloat32 {
					if n.neg {
						f = -f
					}
					return f, true
				}
			}
		}
	}
	f, err := strconv.ParseFloat(string(n.tok(src)), 32)
	return float32(f), err == nil
}

// ObjectMembers parses b as exactly one JSON object and calls fn with each
// member's key (unescaped; it may alias b) and raw value (a sub-slice of
// b), in order. The whole input is validated with the same strict scanner
// as inference requests: nesting depth is bounded and nothing but white
// space may follow the object. Errors are EInvalid with the byte offset.
func ObjectMembers(b []byte, fn func(key, value []byte) error) error {
	s := scanner{b: b}
	if err := s.expect('{'); err != nil {
		return err
	}
	first := true
	for {
		ok, err := s.more('}', &first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		k, err := s.key()
		if err != nil {
			return err
		}
		s.ws()
		start := s.i
		if err := s.skip(1); err != nil {
			return err
		}
		if err := fn(k, s.b[start:s.i]); err != nil {
			return err
		}
	}
	return s.end()
}
