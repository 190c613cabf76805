package runner

import (
	"testing"
	"time"

	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
)

func TestBehind(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hour := &jobs.Batch{Window: time.Hour, ExpiresAt: now.Add(30 * time.Minute)} // 30 min left, margin 6 min
	started := func(ago time.Duration, done int) *jobs.Batch {
		return &jobs.Batch{Window: time.Hour, ExpiresAt: now.Add(30 * time.Minute), InProgressAt: now.Add(-ago), Completed: done}
	}
	tests := []struct {
		name      string
		b         *jobs.Batch
		remaining int
		rate      float64
		ok        bool
		boosted   bool
		want      bool
	}{
		{"on track", hour, 1000, 10, true, false, false},              // 100 s
		{"just on track", hour, 1440*10 - 10, 10, true, false, false}, // 23 min 59 s: before the 24-minute mark
		{"projected past the margin", hour, 1440*10 + 10, 10, true, false, true},
		{"far behind", hour, 1_000_000, 10, true, false, true},
		{"boosted: on track but inside the second margin", hour, 1440*10 - 10, 10, true, true, true},
		{"boosted: on track with both margins", hour, 1080*10 - 10, 10, true, true, false}, // 17 min 59 s
		{"nothing left", hour, 0, 0, false, false, false},
		{"no rate yet, just started", started(time.Second, 0), 1000, 0, false, false, false},
		{"no rate yet, inside the margin", &jobs.Batch{Window: time.Hour, ExpiresAt: now.Add(5 * time.Minute)}, 1000, 0, false, false, true},
		{"starved: nothing done after a minute", started(time.Minute, 0), 1000, 0, false, false, true},
		{"no recent rate, average since start on track", started(10*time.Minute, 6000), 1000, 0, false, false, false},
		{"no recent rate, average since start too slow", started(10*time.Minute, 600), 100_000, 0, false, false, true},
		{"no expiry", &jobs.Batch{}, 1_000_000, 1, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := behind(now, tt.b, tt.remaining, tt.rate, tt.ok, tt.boosted, 30*time.Second); got != tt.want {
				t.Errorf("behind = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPaceAsksForTheShareAndGivesItBack(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	type call struct {
		model string
		share float64
	}
	var calls []call
	r, err := New(Config{Store: openStore(t, clk), Exec: newFakeExec(), Clock: clk, GuaranteedShare: 0.3,
		Pace: func(m string, s float64) { calls = append(calls, call{m, s}) }})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	slow := &jobs.Batch{ID: "slow", Status: jobs.StatusInProgress, Endpoint: "/v2/models/m/infer", Total: 100_000,
		Window: time.Hour, ExpiresAt: now.Add(50 * time.Minute)}
	// About 20 items/s measured: 100,000 items need far more than 50 minutes.
	for i := range 3 {
		r.countCompletions([]jobs.ItemResult{{BatchID: "slow", State: jobs.ItemDone}}, nil)
		if i < 2 {
			clk.Advance(50 * time.Millisecond)
		}
	}
	r.pace(clk.Now(), []*jobs.Batch{slow})
	r.pace(clk.Now(), []*jobs.Batch{slow}) // unchanged: no second call
	// Almost done: on track again.
	slow.Completed = slow.Total - 10
	r.pace(clk.Now(), []*jobs.Batch{slow})
	// Behind again, then the batch leaves: the share goes back.
	slow.Completed = 0
	r.pace(clk.Now(), []*jobs.Batch{slow})
	r.pace(clk.Now(), nil)
	close(r.paceQ)
	r.paceLoop()
	want := []call{{"m", 0.3}, {"m", 0}, {"m", 0.3}, {"m", 0}}
	if len(calls) != len(want) {
		t.Fatalf("Pace calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("Pace call %d = %v, want %v", i, calls[i], want[i])
		}
	}
}

func TestBacklogs(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r, err := New(Config{Store: openStore(t, clk), Exec: newFakeExec(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	exp := clk.Now().Add(time.Hour)
	r.noteBacklog([]*jobs.Batch{
		{ID: "a", Status: jobs.StatusInProgress, Endpoint: "/v2/models/m/infer", Total: 100, Completed: 30, Failed: 10, ExpiresAt: exp},
		{ID: "done", Status: jobs.StatusInProgress, Endpoint: "/v2/models/m/infer", Total: 5, Completed: 5, ExpiresAt: exp},
		{ID: "fin", Status: jobs.StatusFinalizing, Endpoint: "/v2/models/m/infer", Total: 5, ExpiresAt: exp},
		{ID: "other", Status: jobs.StatusInProgress, Endpoint: "/v2/models/n/infer", Total: 7, ExpiresAt: exp},
	})
	got := r.Backlogs("m")
	if len(got) != 1 || got[0] != (Backlog{BatchID: "a", ItemsLeft: 60, Deadline: exp}) {
		t.Fatalf("Backlogs(m) = %+v", got)
	}
	if got := r.Backlogs("n"); len(got) != 1 || got[0].ItemsLeft != 7 {
		t.Fatalf("Backlogs(n) = %+v", got)
	}
	r.noteBacklog(nil)
	if got := r.Backlogs("m"); len(got) != 0 {
		t.Fatalf("after the jobs left: %+v", got)
	}
}
