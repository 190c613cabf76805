package infergate

import "time"

// Event is one decision of a live controller (the mode switcher, the
// autoscaler) or of an operator: what triggered it, the measured figures it
// was made on, and what came of it.
type Event struct {
	// ID increases by one per event, from 1.
	ID   int64     `json:"id"`
	Time time.Time `json:"time"`
	// Kind names the decision: "switch_start", "switch_step",
	// "switch_done", "rollback", "pin", "scale_up", "scale_down", ...
	Kind  string `json:"kind"`
	Model string `json:"model"`
	Class string `json:"class,omitempty"`
	// Trigger is what set it off: "load_high", "load_low", "latency",
	// "cost", "utilization", "backlog", "operator", ...
	Trigger string `json:"trigger,omitempty"`
	// From and To are the modes, settings or instance counts involved.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Figures are the measurements the decision rests on (rates, p99s in
	// ms, cost per 1k, expected saving, shares), by name.
	Figures map[string]float64 `json:"figures,omitempty"`
	// Outcome is "started", "stepped", "completed", "rolled_back",
	// "applied", "refused", ...
	Outcome string `json:"outcome,omitempty"`
	// Message says it in a sentence.
	Message string `json:"message"`
}
