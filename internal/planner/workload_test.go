package planner

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestArrivalsMeanRate(t *testing.T) {
	const rate = 1000.0
	const d = 100 * time.Second
	for _, pattern := range []string{PatternPoisson, PatternBursty, PatternDiurnal} {
		t.Run(pattern, func(t *testing.T) {
			w := Workload{Pattern: pattern, Rate: rate, Duration: d, Seed: 42}
			arr, err := w.Arrivals()
			if err != nil {
				t.Fatal(err)
			}
			within(t, "mean rate", float64(len(arr))/d.Seconds(), rate, 0.05)
			if !slices.IsSorted(arr) || arr[0] < 0 || arr[len(arr)-1] >= d {
				t.Error("arrivals not sorted within [0, duration)")
			}
			again, _ := w.Arrivals()
			if !slices.Equal(arr, again) {
				t.Error("same seed, different arrivals")
			}
			w.Seed++
			other, _ := w.Arrivals()
			if slices.Equal(arr, other) {
				t.Error("different seeds, same arrivals")
			}
		})
	}
}

// count returns the arrivals in [from, to).
func count(arr []time.Duration, from, to time.Duration) int {
	i, _ := slices.BinarySearch(arr, from)
	j, _ := slices.BinarySearch(arr, to)
	return j - i
}

func TestArrivalsShape(t *testing.T) {
	const rate = 1000.0
	const d = 100 * time.Second
	bursty, _ := Workload{Pattern: PatternBursty, Rate: rate, Duration: d, Seed: 1}.Arrivals()
	// 10 cycles of 10 s: calm 8 s at 500/s, burst 2 s at 3000/s.
	calm := count(bursty, 0, 8*time.Second)
	burst := count(bursty, 8*time.Second, 10*time.Second)
	within(t, "calm rate", float64(calm)/8, rate*burstCalm, 0.10)
	within(t, "burst rate", float64(burst)/2, rate*burstPeak, 0.10)

	diurnal, _ := Workload{Pattern: PatternDiurnal, Rate: rate, Duration: d, Seed: 1}.Arrivals()
	// Mean rate over the first and the middle 10 s of a cosine period.
	edge := count(diurnal, 0, 10*time.Second)
	mid := count(diurnal, 45*time.Second, 55*time.Second)
	within(t, "edge rate", float64(edge)/10, rate*0.2516, 0.10)  // 1 - 0.8 sin(pi/5)/(pi/5)
	within(t, "middle rate", float64(mid)/10, rate*1.7869, 0.05) // 1 + 0.8 sin(pi/10)/(pi/10)
}

func TestArrivalsErrors(t *testing.T) {
	for _, w := range []Workload{
		{Pattern: "weird", Rate: 1, Duration: time.Second},
		{Rate: 0, Duration: time.Second},
		{Rate: 1, Duration: 0},
		{Rate: 1e9, Duration: time.Hour},
		{Pattern: PatternTrace},
		{Pattern: PatternTrace, Trace: []time.Duration{2, 1}},
		{Pattern: PatternTrace, Trace: []time.Duration{-1}},
	} {
		if _, err := w.Arrivals(); err == nil {
			t.Errorf("%+v: no error", w)
		}
	}
	tr := []time.Duration{0, 5, 5, 9}
	got, err := Workload{Pattern: PatternTrace, Trace: tr}.Arrivals()
	if err != nil || !slices.Equal(got, tr) {
		t.Errorf("trace: %v %v", got, err)
	}
}

func TestParseTrace(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []time.Duration
	}{
		{"unix floats", "1712345678.5\n1712345678.75\n1712345680\n", []time.Duration{0, ms(250), ms(1500)}},
		{"nanosecond exact", "1712345678.000000001\n1712345678.000000003\n", []time.Duration{0, 2}},
		{"rfc3339", "2024-04-05T10:00:00Z\n2024-04-05T10:00:00.5Z\n2024-04-05T12:00:01+02:00\n", []time.Duration{0, ms(500), time.Second}},
		{"csv with header", "timestamp,model,tokens\n100.0,m,3\n100.25,m,4\n", []time.Duration{0, ms(250)}},
		{"comments, blanks, CRLF, BOM", "\uFEFF# a trace\r\n\r\n  5 \r\n# more\r\n5\r\n6.5\r\n", []time.Duration{0, 0, ms(1500)}},
		{"quoted csv and tabs", "\"ts\"\t\"x\"\n\"2.0\"\t1\n3\t1\n", []time.Duration{0, time.Second}},
		{"exponent", "1e3\n1.0005e3\n", []time.Duration{0, ms(500)}},
		{"mixed formats", "1970-01-01T00:00:10Z\n10.5\n", []time.Duration{0, ms(500)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTrace(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseTraceErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"decreasing", "10\n11\n10.5\n", "line 3: arrival \"10.5\" is before \"11\" on line 2"},
		{"garbage", "# c\n10\nbanana\n", "line 3: cannot parse \"banana\""},
		{"garbage first line number", "12abc\n", "line 1: cannot parse"},
		{"second header", "ts\nts\n1\n", "line 2: cannot parse \"ts\""},
		{"negative", "-5\n", "line 1: timestamp \"-5\" is out of range"},
		{"nan", "1\nNaN\n", "line 2: timestamp \"NaN\" is not a finite number"},
		{"too large", "99999999999\n", "line 1: timestamp \"99999999999\" is out of range"},
		{"empty", "# nothing\n\n", "no arrivals"},
		{"header only", "timestamp\n", "no arrivals"},
		{"empty csv field", ",5\n", "line 1: empty timestamp"},
		{"before 1970", "1969-12-31T23:59:59Z\n", "line 1: timestamp \"1969-12-31T23:59:59Z\" is out of range"},
		{"long line", "1\n" + strings.Repeat("9", 2<<20) + "\n", "line 2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTrace(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func FuzzParseTrace(f *testing.F) {
	for _, s := range []string{
		"1712345678.5\n1712345679\n",
		"ts,x\n1,2\n3,4\n",
		"2024-04-05T10:00:00Z\n2024-04-05T10:00:00.5Z\n",
		"# c\n\n5\n4\n",
		"1e3\n.5\n5.\n",
		"\"1\"\t2\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseTrace(strings.NewReader(in))
		if err != nil {
			return
		}
		if len(got) == 0 || got[0] != 0 {
			t.Fatalf("accepted %q as %v: want offsets from the first", in, got)
		}
		if !slices.IsSorted(got) {
			t.Fatalf("accepted %q as %v: not non-decreasing", in, got)
		}
	})
}
