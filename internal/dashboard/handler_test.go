package dashboard

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

// fakeEvents records the arguments of the last List and returns the
// events after the given ID.
type fakeEvents struct {
	events []infergate.Event

	mu    sync.Mutex
	after int64
	limit int
	model string
}

func (f *fakeEvents) args() (after int64, limit int, model string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.after, f.limit, f.model
}

func (f *fakeEvents) List(after int64, limit int, model string) []infergate.Event {
	f.mu.Lock()
	f.after, f.limit, f.model = after, limit, model
	f.mu.Unlock()
	var out []infergate.Event
	for _, e := range f.events {
		if e.ID > after {
			out = append(out, e)
		}
	}
	return out
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newTestMetrics(t, reg, true)
	clk := clock.NewFake(start)
	ev := &fakeEvents{events: []infergate.Event{
		{ID: 1, Time: start, Kind: "switch_start", Model: "m", Class: "bulk", From: "hybrid", To: "batch", Message: "switching"},
		{ID: 2, Time: start, Kind: "scale_up", Model: "m", From: "1", To: "2", Message: "scaling"},
	}}
	d := New(Options{Gatherer: reg, Clock: clk, Events: ev,
		SLO: func(model, class string) time.Duration {
			if class == "urgent" {
				return 50 * time.Millisecond
			}
			return 0
		}})
	m.instances.WithLabelValues("m").Set(1)
	d.Sample()
	clk.Advance(time.Second)
	m.observe("m", "urgent", 4, .001, .002)
	d.Sample()
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()

	t.Run("page", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("Content-Type %q, want text/html", ct)
		}
		for _, want := range []string{"canvas", "v1/dashboard", "data-ready", "dataset.points"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("page lacks %q", want)
			}
		}
		for _, bad := range []string{"http://", "https://", "<script src", "<link"} {
			if strings.Contains(string(body), bad) {
				t.Errorf("page refers to an external resource (%q)", bad)
			}
		}
	})

	t.Run("data", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/v1/dashboard")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var r Response
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Points) != 2 || r.Now != clk.Now().UnixMilli() {
			t.Fatalf("%d points, now %d; want 2, %d", len(r.Points), r.Now, clk.Now().UnixMilli())
		}
		if got := r.Points[1].Models["m"].OKRate["urgent"]; got != 4 {
			t.Errorf("ok_rps[urgent] = %v, want 4", got)
		}
		if got := r.Points[0].Models["m"].Batch; !math.IsNaN(float64(got)) {
			t.Errorf("first batch_mean = %v, want null", got)
		}
		if got := r.SLO["m"]; len(got) != 1 || got["urgent"] != 50 {
			t.Errorf("slo = %v, want urgent 50 ms only", r.SLO)
		}
		if _, limit, model := ev.args(); len(r.Events) != 2 || limit != maxEvents || model != "" {
			t.Errorf("events %v (limit %d, model %q)", r.Events, limit, model)
		}
		if strings.Join(r.Models, ",") != "m" || len(r.Classes) != 3 || len(r.Modes) != 3 {
			t.Errorf("models %v classes %v modes %v", r.Models, r.Classes, r.Modes)
		}
		if !strings.Contains(string(body), `"bulk":null`) {
			t.Errorf("a figure that cannot be computed should be null: %s", body)
		}
	})

	t.Run("since and after", func(t *testing.T) {
		first := start.UnixMilli()
		_, body := get(t, srv.URL+"/v1/dashboard?since="+strconv.FormatInt(first, 10)+"&after=1")
		var r Response
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Points) != 1 || r.Points[0].T != first+1000 {
			t.Errorf("points %v, want only the one after %d", r.Points, first)
		}
		if after, _, _ := ev.args(); len(r.Events) != 1 || r.Events[0].ID != 2 || after != 1 {
			t.Errorf("events %v, want ID 2 only", r.Events)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{"GET", "/v1/dashboard?since=-1", http.StatusBadRequest},
			{"GET", "/v1/dashboard?since=1e3", http.StatusBadRequest},
			{"GET", "/v1/dashboard?after=x", http.StatusBadRequest},
			{"GET", "/v1/dashboard?since=9999999999999999999", http.StatusBadRequest},
			{"GET", "/nope", http.StatusNotFound},
			{"POST", "/v1/dashboard", http.StatusMethodNotAllowed},
		} {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
			}
		}
	})
}

func TestHandlerEmpty(t *testing.T) {
	d := New(Options{Gatherer: prometheus.NewRegistry()})
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	_, body := get(t, srv.URL+"/v1/dashboard")
	for _, want := range []string{`"points":[]`, `"events":[]`, `"now":0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body %s lacks %s", body, want)
		}
	}
}

func TestParseNonNegative(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"0", 0, true},
		{"1717000000000", 1717000000000, true},
		{"007", 7, true},
		{"999999999999999999", 999999999999999999, true},
		{"1000000000000000000", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1.5", 0, false},
		{"0x10", 0, false},
		{"١", 0, false}, // a non-ASCII digit
	} {
		got, err := parseNonNegative(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseNonNegative(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseNonNegative(f *testing.F) {
	for _, s := range []string{"", "0", "1717000000000", "-1", "1e3", "999999999999999999", "9999999999999999999", "0x1f", " 7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 64 {
			return
		}
		v, err := parseNonNegative(s)
		if err != nil {
			if v != 0 {
				t.Fatalf("error with value %d", v)
			}
			return
		}
		if v < 0 {
			t.Fatalf("parseNonNegative(%q) = %d < 0", s, v)
		}
		if s == "" {
			if v != 0 {
				t.Fatalf("empty = %d", v)
			}
			return
		}
		// Accepted values are plain decimal: they round-trip up to leading zeros.
		if trimmed := strings.TrimLeft(s, "0"); strconv.FormatInt(v, 10) != trimmed && (trimmed != "" || v != 0) {
			t.Fatalf("parseNonNegative(%q) = %d", s, v)
		}
	})
}
