package kserve

import (
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func scanNumber(t *testing.T, s string) *number {
	t.Helper()
	sc := scanner{b: []byte(s)}
	var n number
	if err := sc.number(&n); err != nil || sc.i != len(s) {
		t.Fatalf("scan %q: %v (at %d)", s, err, sc.i)
	}
	return &n
}

// TestFloatParsingMatchesStrconv compares the fast paths with strconv on
// random decimals of many shapes, including float32 midpoints.
func TestFloatParsingMatchesStrconv(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var cases []string
	for range 20000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		cases = append(cases,
			strconv.FormatFloat(float64(f), 'g', -1, 32),
			strconv.FormatFloat(float64(f), 'g', -1, 64),
			strconv.FormatFloat(float64(f), 'e', r.IntN(16), 64))
		// The float64 exactly halfway between f and its successor: the
		// double-rounding trap.
		next := math.Nextafter32(f, float32(math.Inf(1)))
		if !math.IsInf(float64(next), 0) {
			mid := (float64(f) + float64(next)) / 2
			cases = append(cases, strconv.FormatFloat(mid, 'g', -1, 64), strconv.FormatFloat(mid, 'e', 16, 64))
		}
		d := r.Float64() * math.Pow(10, float64(r.IntN(40)-20))
		cases = append(cases, strconv.FormatFloat(d, 'g', -1, 64), strconv.FormatFloat(d, 'f', r.IntN(12), 64))
		cases = append(cases, strconv.Itoa(r.IntN(1<<30)), "-"+strconv.FormatUint(r.Uint64()>>r.IntN(64), 10))
	}
	cases = append(cases, "0", "-0", "0.0", "1e-50", "1e39", "3.4028235e38", "3.4028236e38", "1.401298464324817e-45",
		"7e-46", "0.000000000000000000000000000000000000000000001", "123456789012345678901234567890", "1e308", "1e309",
		"4.9e-324", "2.4703282292062328e-324", "9007199254740993", "0.30000000000000004")
	for _, c := range cases {
		n := scanNumber(t, c)
		want32, err32 := strconv.ParseFloat(c, 32)
		got32, ok32 := n.float32([]byte(c))
		if ok32 != (err32 == nil) || (ok32 && math.Float32bits(got32) != math.Float32bits(float32(want32))) {
			t.Errorf("float32(%q) = %v, %v; strconv %v, %v", c, got32, ok32, float32(want32), err32)
		}
		want64, err64 := strconv.ParseFloat(c, 64)
		got64, ok64 := n.float64([]byte(c))
		if ok64 != (err64 == nil) || (ok64 && math.Float64bits(got64) != math.Float64bits(want64)) {
			t.Errorf("float64(%q) = %v, %v; strconv %v, %v", c, got64, ok64, want64, err64)
		}
	}
}

func TestIntegerParsing(t *testing.T) {
	tests := []struct {
		s    string
		bits uint
		sgn  bool
		want int64
		e    intErr
	}{
		{"0", 8, true, 0, intOK},
		{"-0", 8, false, 0, intOK},
		{"127", 8, true, 127, intOK},
		{"128", 8, true, 0, intOverflow},
		{"-128", 8, true, -128, intOK},
		{"-129", 8, true, 0, intOverflow},
		{"255", 8, false, 255, intOK},
		{"256", 8, false, 0, intOverflow},
		{"-1", 8, false, 0, intOverflow},
		{"1.0", 32, true, 1, intOK},
		{"1.50", 32, true, 0, intNotInteger},
		{"15e-1", 32, true, 0, intNotInteger},
		{"150e-2", 32, true, 0, intNotInteger},
		{"100e-2", 32, true, 1, intOK},
		{"1e9", 32, true, 1e9, intOK},
		{"1e10", 32, true, 0, intOverflow},
		{"1e-999999999", 64, true, 0, intNotInteger},
		{"0e999999999", 64, true, 0, intOK},
		{"1e999999999", 64, true, 0, intOverflow},
		{"100000000000000000000e-5", 64, true, 1000000000000000, intOK},
		{"12345678901234567891.5e-1", 64, false, 0, intNotInteger},
		{"9223372036854775807", 64, true, math.MaxInt64, intOK},
		{"-9223372036854775808", 64, true, math.MinInt64, intOK},
		{"-9223372036854775809", 64, true, 0, intOverflow},
		{"1.00000000000000000000000000001", 64, true, 0, intNotInteger},
		{"123456789012345678901234567890", 64, false, 0, intOverflow},
	}
	for _, tt := range tests {
		n := scanNumber(t, tt.s)
		var got int64
		var e intErr
		if tt.sgn {
			got, e = n.signed(tt.bits)
		} else {
			var u uint64
			u, e = n.unsigned(tt.bits)
			got = int64(u)
		}
		if e != tt.e || (e == intOK && got != tt.want) {
			t.Errorf("%q (%d bits, signed %v) = %d, %d; want %d, %d", tt.s, tt.bits, tt.sgn, got, e, tt.want, tt.e)
		}
	}
	n := scanNumber(t, "18446744073709551615")
	if u, e := n.unsigned(64); e != intOK || u != math.MaxUint64 {
		t.Errorf("max uint64: %d %d", u, e)
	}
	n = scanNumber(t, "18446744073709551616")
	if _, e := n.unsigned(64); e != intOverflow {
		t.Errorf("max uint64 + 1: %d", e)
	}
}

func TestNumberSyntax(t *testing.T) {
	for _, bad := range []string{"", "-", "01", "1.", ".5", "1e", "1e+", "+1", "--1", "0x10", "Infinity", "1_000"} {
		sc := scanner{b: []byte(bad)}
		var n number
		err := sc.number(&n)
		if err == nil && sc.i == len(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// halfValue is the exact value of a finite half as a big.Rat.
func halfValue(h uint16) *big.Rat {
	return new(big.Rat).SetFloat64(float64(halfToFloat32(h)))
}

// exactDecimal writes r (a dyadic rational) exactly in decimal.
func exactDecimal(r *big.Rat) string {
	f := new(big.Float).SetPrec(200).SetRat(r)
	s := f.Text('f', 60)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// TestHalf checks every finite half round trips through its JSON form, and
// that values at, just above and just below each midpoint round correctly.
func TestHalf(t *testing.T) {
	for h := 0; h < 0x10000; h++ {
		if h&0x7c00 == 0x7c00 {
			continue
		}
		f := halfToFloat32(uint16(h))
		s := strconv.FormatFloat(float64(f), 'g', -1, 32)
		got, ok := scanNumber(t, s).half([]byte(s))
		if !ok || got != uint16(h) {
			t.Fatalf("half %#04x -> %s -> %#04x, %v", h, s, got, ok)
		}
	}
	tiny := "00000000000000000000000000000001" // appended digits: a nudge far below float64 precision
	for h := uint16(0); h < 0x7bff; h++ {
		lo, hi := halfValue(h), halfValue(h+1)
		mid := new(big.Rat).Add(lo, hi)
		mid.Quo(mid, big.NewRat(2, 1))
		m := exactDecimal(mid)
		if !strings.Contains(m, ".") {
			m += "."
		}
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		for _, c := range []struct {
			s    string
			want uint16
		}{
			{strings.TrimSuffix(m, "."), even},
			{m + tiny, h + 1},
		} {
			got, ok := scanNumber(t, c.s).half([]byte(c.s))
			if !ok || got != c.want {
				t.Fatalf("half(%s) = %#04x, %v; want %#04x", c.s, got, ok, c.want)
			}
			if got, ok := scanNumber(t, "-"+c.s).half([]byte("-" + c.s)); !ok || got != c.want|0x8000 {
				t.Fatalf("half(-%s) = %#04x, %v; want %#04x", c.s, got, ok, c.want|0x8000)
			}
		}
		// Just below the midpoint: subtract a tiny amount exactly.
		below := new(big.Rat).Sub(mid, new(big.Rat).SetFrac(big.NewInt(1), new(big.Int).Exp(big.NewInt(10), big.NewInt(80), nil)))
		bs := new(big.Float).SetPrec(400).SetRat(below).Text('f', 90)
		if got, ok := scanNumber(t, bs).half([]byte(bs)); !ok || got != h {
			t.Fatalf("half(%s) = %#04x, %v; want %#04x", bs, got, ok, h)
		}
	}
	// Below half the smallest subnormal rounds to zero; at it, ties to even (zero).
	for s, want := range map[string]uint16{"2.9802322387695312e-08": 0, "2.9802322387695313e-08": 1, "1e-30": 0, "-1e-30": 0x8000, "65519.99": 0x7bff} {
		if got, ok := scanNumber(t, s).half([]byte(s)); !ok || got != want {
			t.Errorf("half(%s) = %#04x, %v; want %#04x", s, got, ok, want)
		}
	}
}
