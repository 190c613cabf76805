package jobs

import (
	"strings"
	"testing"
)

func TestCanTransition(t *testing.T) {
	legal := map[[2]Status]bool{
		{StatusValidating, StatusInProgress}: true,
		{StatusValidating, StatusFailed}:     true,
		{StatusValidating, StatusCancelling}: true,
		{StatusInProgress, StatusFinalizing}: true,
		{StatusInProgress, StatusCancelling}: true,
		{StatusInProgress, StatusExpired}:    true,
		{StatusInProgress, StatusFailed}:     true,
		{StatusFinalizing, StatusCompleted}:  true,
		{StatusFinalizing, StatusExpired}:    true,
		{StatusFinalizing, StatusFailed}:     true,
		{StatusCancelling, StatusCancelled}:  true,
	}
	for _, from := range Statuses {
		for _, to := range Statuses {
			if got, want := CanTransition(from, to), legal[[2]Status{from, to}]; got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
			if from.Terminal() && CanTransition(from, to) {
				t.Errorf("terminal %s can move to %s", from, to)
			}
		}
	}
	if CanTransition("bogus", StatusFailed) || CanTransition(StatusValidating, "bogus") {
		t.Error("unknown statuses transition")
	}
}

func TestStatus(t *testing.T) {
	terminal := map[Status]bool{StatusFailed: true, StatusCompleted: true, StatusExpired: true, StatusCancelled: true}
	for _, s := range Statuses {
		if !s.Valid() || s.Terminal() != terminal[s] || s.Active() == terminal[s] {
			t.Errorf("%s: valid %v terminal %v active %v", s, s.Valid(), s.Terminal(), s.Active())
		}
		var b Batch
		if p := b.StatusTime(s); p == nil {
			t.Errorf("no timestamp for %s", s)
		}
	}
	if Status("bogus").Valid() || Status("bogus").Active() {
		t.Error("bogus status is valid")
	}
	for _, s := range []ItemState{ItemPending, ItemLeased, ItemDone, ItemFailed} {
		if !s.Valid() || s.Terminal() != (s == ItemDone || s == ItemFailed) {
			t.Errorf("item state %s", s)
		}
	}
	if ItemState("x").Valid() {
		t.Error("bogus item state is valid")
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		f, b := NewFileID(), NewBatchID()
		if !strings.HasPrefix(f, "file-") || !strings.HasPrefix(b, "batch_") || len(f) != 37 || len(b) != 38 {
			t.Fatalf("ids %q %q", f, b)
		}
		if seen[f] || seen[b] {
			t.Fatal("repeated id")
		}
		seen[f], seen[b] = true, true
	}
}

func TestClampLimit(t *testing.T) {
	for in, want := range map[int]int{-1: DefaultListLimit, 0: DefaultListLimit, 5: 5, MaxListLimit + 1: MaxListLimit} {
		if got := ClampLimit(in); got != want {
			t.Errorf("ClampLimit(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestItemCounts(t *testing.T) {
	c := ItemCounts{Pending: 1, Leased: 2, Done: 3, Failed: 4}
	if c.Total() != 10 || c.Runnable() != 3 {
		t.Fatalf("%+v: total %d runnable %d", c, c.Total(), c.Runnable())
	}
}
