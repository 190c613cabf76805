package kserve

import (
	"math"
	"math/big"
)

// IEEE 754 binary16 (FP16) conversions. JSON has no half type, so FP16
// tensor elements travel as decimal numbers: decoding rounds the decimal
// correctly (round to nearest, ties to even) to binary16, and encoding
// writes the shortest decimal that identifies the value as a float32 (every
// binary16 value is exactly a float32), which rounds back to the same half.

// halfToFloat32 widens a binary16 value exactly.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0x1f: // Inf or NaN; keep the payload
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0: // zero or subnormal: mant × 2^-24, exact in float32
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// halfRound splits the rounding of a finite float64 to binary16: lo is the
// result truncated toward zero (sign included, magnitude bits may reach
// 0x7c00 for overflow), and rem compares the discarded part with half a
// unit in the last place: -1 below (or nothing discarded), 0 exactly half,
// +1 above.
func halfRound(f float64) (lo uint16, rem int) {
	bits := math.Float64bits(f)
	sign := uint16(bits>>48) & 0x8000
	be := int(bits>>52) & 0x7ff
	if be == 0 { // zero or float64 subnormal: far below the half range
		return sign, -1
	}
	e := be - 1023
	m := bits&(1<<52-1) | 1<<52 // value = m × 2^(e-52)
	var shift uint
	var q uint64
	switch {
	case e > 15:
		return sign | 0x7c00, -1
	case e >= -14: // normal half: 10 fraction bits
		shift = 42
		q = m>>shift + uint64(e+14)<<10 // implicit bit carries into the exponent
	case e >= -25: // subnormal half: value / 2^-24
		shift = uint(28 - e)
		q = m >> shift
	default: // below 2^-25: rounds to zero
		return sign, -1
	}
	r := m & (1<<shift - 1)
	half := uint64(1) << (shift - 1)
	switch {
	case r < half:
		rem = -1
	case r == half:
		rem = 0
	default:
		rem = 1
	}
	return sign | uint16(q), rem
}

// half converts a scanned JSON number (from src) to binary16 with correct
// rounding. ok is false when the value is out of range (rounds to ±Inf).
func (n *number) half(src []byte) (uint16, bool) {
	d, ok := n.float64(src)
	if !ok {
		return 0, false
	}
	lo, rem := halfRound(d)
	if rem == 0 {
		// The float64 is exactly a half midpoint; the decimal itself may
		// lie slightly on either side, so compare it exactly. This is rare
		// and the number token is at most maxNumberLen bytes; since its
		// value is near d (within the half range), its exponent is small.
		rem = cmpDecimalAbs(n.tok(src), d)
	}
	h := lo
	if rem > 0 || (rem == 0 && lo&1 == 1) {
		h++
	}
	if h&0x7fff >= 0x7c00 {
		return 0, false
	}
	return h, true
}

// cmpDecimalAbs compares |tok| (a valid JSON number) with |d| exactly.
func cmpDecimalAbs(tok []byte, d float64) int {
	var x, y big.Rat
	if _, ok := x.SetString(string(tok)); !ok {
		return 0 // cannot happen for a scanned number; fall back to ties-to-even
	}
	x.Abs(&x)
	y.SetFloat64(math.Abs(d))
	return x.Cmp(&y)
}
