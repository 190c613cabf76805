package kserve

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/infergate/infergate"
)

// canonicalNaN32/64 and halfNaN are what JSON null decodes to in
// floating-point data (JSON cannot carry NaN or ±Inf; the encoders write
// them as null).
const (
	canonicalNaN32 = 0x7fc00000
	canonicalNaN64 = 0x7ff8000000000000
	halfNaN        = 0x7e00
)

// data parses a JSON tensor "data" value: an array, possibly nested
// (row-major), of elements of type dt. It returns exactly n elements as raw
// little-endian bytes, or an error naming label() (e.g. `input "x"`).
//
// The allocation is bounded by the bytes left in the input: n elements
// need at least 2n+1 bytes of JSON, so a shape that claims more elements
// than the body can hold costs nothing before it is rejected.
func (s *scanner) data(dt infergate.DataType, n int64, label func() string) ([]byte, error) {
	size := int64(dt.Size())
	kind := kindOf(dt)
	if s.peek() != '[' {
		return nil, prefix(label(), s.syntaxErr(`'[' to start "data"`))
	}
	keep := n
	if room := int64(len(s.b)-s.i-1) / 2; room < keep {
		keep = room
	}
	out := make([]byte, keep*size)
	var scratch [8]byte
	var num number
	k := int64(0) // elements seen
	depth := 0
	const (
		afterOpen = iota
		afterValue
		afterComma
	)
	state := afterOpen
	for {
		c := s.peek()
		if s.i >= len(s.b) {
			return nil, prefix(label(), s.syntaxErr("rest of \"data\""))
		}
		switch {
		case c == '[' && state != afterValue:
			if depth >= maxJSONDepth {
				return nil, prefix(label(), invalid("malformed JSON at offset %d: data nested deeper than %d", s.i, maxJSONDepth))
			}
			depth++
			s.i++
			state = afterOpen
			continue
		case c == ']' && state != afterComma:
			s.i++
			depth--
			if depth == 0 {
				if k != n {
					return nil, prefix(label(), invalid("data has %d elements but the shape needs %d", k, n))
				}
				return out, nil
			}
			state = afterValue
			continue
		case state == afterValue:
			if c != ',' {
				return nil, prefix(label(), s.syntaxErr("',' or ']'"))
			}
			s.i++
			state = afterComma
			continue
		}
		// An element.
		dst := scratch[:size]
		if k < keep {
			off := k * size
			dst = out[off : off+size]
		}
		if err := s.element(kind, dt, dst, &num); err != nil {
			return nil, prefix(fmt.Sprintf("%s: data element %d", label(), k), err)
		}
		k++
		state = afterValue
	}
}

// elemKind classifies a datatype once per tensor, so the per-element
// dispatch is an integer switch rather than string comparisons.
type elemKind uint8

const (
	kindFP32 elemKind = iota
	kindFP64
	kindFP16
	kindInt
	kindUint
	kindBool
)

func kindOf(dt infergate.DataType) elemKind {
	switch dt {
	case infergate.FP32:
		return kindFP32
	case infergate.FP64:
		return kindFP64
	case infergate.FP16:
		return kindFP16
	case infergate.INT8, infergate.INT16, infergate.INT32, infergate.INT64:
		return kindInt
	case infergate.UINT8, infergate.UINT16, infergate.UINT32, infergate.UINT64:
		return kindUint
	}
	return kindBool
}

// element parses one tensor element of the given kind into dst, whose
// length is the element size.
func (s *scanner) element(kind elemKind, dt infergate.DataType, dst []byte, num *number) error {
	c := s.peek()
	if c != '-' && (c < '0' || c > '9') {
		switch {
		case c == 'n' && kind <= kindFP16:
			if err := s.literal("null"); err != nil {
				return err
			}
			switch kind {
			case kindFP32:
				binary.LittleEndian.PutUint32(dst, canonicalNaN32)
			case kindFP64:
				binary.LittleEndian.PutUint64(dst, canonicalNaN64)
			default:
				binary.LittleEndian.PutUint16(dst, halfNaN)
			}
			return nil
		case kind == kindBool && (c == 't' || c == 'f'):
			v, err := s.boolean()
			dst[0] = 0
			if v {
				dst[0] = 1
			}
			return err
		}
		return s.syntaxErr(expectedElement(kind))
	}
	if err := s.number(num); err != nil {
		return err
	}
	switch kind {
	case kindFP32:
		f, ok := num.float32(s.b)
		if !ok {
			return rangeErr(num.tok(s.b), dt)
		}
		binary.LittleEndian.PutUint32(dst, math.Float32bits(f))
	case kindFP64:
		f, ok := num.float64(s.b)
		if !ok {
			return rangeErr(num.tok(s.b), dt)
		}
		binary.LittleEndian.PutUint64(dst, math.Float64bits(f))
	case kindFP16:
		h, ok := num.half(s.b)
		if !ok {
			return rangeErr(num.tok(s.b), dt)
		}
		binary.LittleEndian.PutUint16(dst, h)
	case kindInt:
		v, e := num.signed(uint(len(dst)) * 8)
		if e != intOK {
			return intError(num.tok(s.b), dt, e)
		}
		putUint(dst, uint64(v))
	case kindUint:
		v, e := num.unsigned(uint(len(dst)) * 8)
		if e != intOK {
			return intError(num.tok(s.b), dt, e)
		}
		putUint(dst, v)
	case kindBool:
		v, e := num.unsigned(8)
		if e != intOK || v > 1 {
			return invalid("%s is not a BOOL (want true, false, 0 or 1)", tokText(num.tok(s.b)))
		}
		dst[0] = byte(v)
	}
	return nil
}

// putUint stores the low len(dst) bytes of v, little-endian.
func putUint(dst []byte, v uint64) {
	switch len(dst) {
	case 1:
		dst[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(dst, uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(dst, uint32(v))
	case 8:
		binary.LittleEndian.PutUint64(dst, v)
	}
}

func expectedElement(kind elemKind) string {
	switch kind {
	case kindBool:
		return "true, false, 0 or 1"
	case kindFP16, kindFP32, kindFP64:
		return "a number or null"
	}
	return "an integer"
}

func rangeErr(tok []byte, dt infergate.DataType) error {
	return invalid("%s is out of range for %s", tokText(tok), dt)
}

func intError(tok []byte, dt infergate.DataType, e intErr) error {
	if e == intNotInteger {
		return invalid("%s is not an integer (datatype %s)", tokText(tok), dt)
	}
	return invalid("%s is out of range for %s", tokText(tok), dt)
}

// tokText shortens a number token for an error message.
func tokText(tok []byte) string {
	if len(tok) > 40 {
		return string(tok[:37]) + "..."
	}
	return string(tok)
}

// prefix prepends label to the message of an *infergate.Error.
func prefix(label string, err error) error {
	if e, ok := err.(*infergate.Error); ok {
		return &infergate.Error{Code: e.Code, Message: label + ": " + e.Message, Err: e.Err}
	}
	return err
}
