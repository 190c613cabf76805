package events

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
)

func TestLogOrderAndBounds(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	reg := prometheus.NewRegistry()
	l := New(clk, nil, reg, 3)
	for i := range 5 {
		clk.Advance(time.Second)
		model := "a"
		if i%2 == 1 {
			model = "b"
		}
		l.Add(infergate.Event{Kind: "switch_start", Model: model, Outcome: "started", Message: "m"})
	}
	tests := []struct {
		name  string
		after int64
		limit int
		model string
		want  []int64
	}{
		{"all kept, newest last", 0, 0, "", []int64{3, 4, 5}},
		{"after", 3, 0, "", []int64{4, 5}},
		{"limit keeps the newest", 0, 2, "", []int64{4, 5}},
		{"model", 0, 0, "a", []int64{3, 5}},
		{"nothing new", 5, 0, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := l.List(tc.after, tc.limit, tc.model)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d events, want %v", len(got), tc.want)
			}
			for i, e := range got {
				if e.ID != tc.want[i] {
					t.Fatalf("event %d has ID %d, want %d", i, e.ID, tc.want[i])
				}
				if e.Time != time.Unix(1000+e.ID, 0) {
					t.Fatalf("event %d time %v", e.ID, e.Time)
				}
			}
		})
	}
	if n := testutil.ToFloat64(l.count.WithLabelValues("a", "switch_start", "started")); n != 3 {
		t.Fatalf("metric counted %v events of model a, want 3", n)
	}
}
