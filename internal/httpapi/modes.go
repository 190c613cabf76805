package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/switcher"
)

// EventLister lists recorded decisions (internal/events.Log).
type EventLister interface {
	List(after int64, limit int, model string) []infergate.Event
}

// ModeController is a model's mode switcher (internal/switcher.Switcher).
type ModeController interface {
	States() []switcher.State
	Pin(c infergate.Class, m infergate.Mode) error
	Unpin(c infergate.Class) error
	Force(c infergate.Class, m infergate.Mode, p *batching.Policy) error
}

func (s *Server) registerModeRoutes(mux *http.ServeMux) {
	if s.opt.Events != nil {
		mux.HandleFunc("GET /v1/events", s.listEvents)
	}
	if s.opt.Modes != nil {
		mux.HandleFunc("GET /v1/models/{model}/modes", s.getModes)
		mux.HandleFunc("POST /v1/models/{model}/modes/{class}", s.setMode)
	}
}

// maxEvents is the most events one GET /v1/events returns.
const maxEvents = 1000

// listEvents serves GET /v1/events?after=ID&limit=N&model=M: the recorded
// decisions, newest last.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, limit := int64(0), maxEvents
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, s.log, infergate.Errorf(infergate.EInvalid, "after must be a non-negative event id, not %q", v))
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxEvents {
			writeError(w, s.log, infergate.Errorf(infergate.EInvalid, "limit must be 1..%d, not %q", maxEvents, v))
			return
		}
		limit = n
	}
	evs := s.opt.Events.List(after, limit, q.Get("model"))
	if evs == nil {
		evs = []infergate.Event{}
	}
	writeJSON(w, 200, map[string]any{"object": "list", "data": evs})
}

func (s *Server) modeController(w http.ResponseWriter, r *http.Request) (ModeController, bool) {
	name := r.PathValue("model")
	if _, err := s.eng.Model(name); err != nil {
		writeError(w, s.log, err)
		return nil, false
	}
	mc := s.opt.Modes(name)
	if mc == nil {
		writeError(w, s.log, infergate.Errorf(infergate.ENotFound, "model %s has no mode switching configured (switching: in its config)", name))
		return nil, false
	}
	return mc, true
}

// getModes serves GET /v1/models/{model}/modes.
func (s *Server) getModes(w http.ResponseWriter, r *http.Request) {
	mc, ok := s.modeController(w, r)
	if !ok {
		return
	}
	writeJSON(w, 200, map[string]any{"model": r.PathValue("model"), "classes": mc.States()})
}

// modeRequest is the body of POST /v1/models/{model}/modes/{class}.
type modeRequest struct {
	// Action is pin, unpin or switch.
	Action string         `json:"action"`
	Mode   infergate.Mode `json:"mode"`
	// Policy, for switch, is the setting to try in the target mode:
	// fields set here override the policy of the lane serving it.
	Policy *modePolicy `json:"policy"`
}

// modePolicy is a policy setting in JSON, durations as Go duration strings
// ("200ms").
type modePolicy struct {
	Kind          batching.Kind `json:"policy"`
	MaxBatchSize  int           `json:"max_batch_size"`
	MaxQueueDelay string        `json:"max_queue_delay"`
	BatchTimeout  string        `json:"batch_timeout"`
	TargetLatency string        `json:"target_latency"`
}

func (p *modePolicy) policy() (*batching.Policy, error) {
	if p == nil {
		return nil, nil
	}
	out := &batching.Policy{Kind: p.Kind, MaxBatchSize: p.MaxBatchSize}
	for _, d := range []struct {
		name string
		s    string
		to   *time.Duration
	}{{"max_queue_delay", p.MaxQueueDelay, &out.MaxQueueDelay}, {"batch_timeout", p.BatchTimeout, &out.BatchTimeout}, {"target_latency", p.TargetLatency, &out.TargetLatency}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v < 0 {
			return nil, infergate.Errorf(infergate.EInvalid, "policy %s %q: want a duration such as \"5ms\"", d.name, d.s)
		}
		*d.to = v
	}
	if p.MaxBatchSize < 0 {
		return nil, infergate.Errorf(infergate.EInvalid, "policy max_batch_size must be >= 0")
	}
	return out, nil
}

const maxModeBody = 64 << 10

// setMode serves POST /v1/models/{model}/modes/{class}: the operator pins
// a class to a mode, unpins it, or forces a (gradual, guarded) switch.
func (s *Server) setMode(w http.ResponseWriter, r *http.Request) {
	mc, ok := s.modeController(w, r)
	if !ok {
		return
	}
	c, err := infergate.ParseClass(r.PathValue("class"))
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	req, err := decodeModeRequest(http.MaxBytesReader(w, r.Body, maxModeBody))
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	switch req.Action {
	case "pin":
		err = mc.Pin(c, req.Mode)
	case "unpin":
		err = mc.Unpin(c)
	case "switch":
		var p *batching.Policy
		if p, err = req.Policy.policy(); err == nil {
			err = mc.Force(c, req.Mode, p)
		}
	}
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	writeJSON(w, 200, map[string]any{"model": r.PathValue("model"), "classes": mc.States()})
}

// decodeModeRequest reads and checks a mode request body.
func decodeModeRequest(body interface{ Read([]byte) (int, error) }) (modeRequest, error) {
	var req modeRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return req, infergate.Errorf(infergate.ETooLarge, "mode request larger than %d bytes", maxModeBody)
		}
		return req, infergate.Errorf(infergate.EInvalid, "malformed mode request: %v", err)
	}
	switch req.Action {
	case "pin", "switch":
		switch req.Mode {
		case infergate.ModeRealtime, infergate.ModeHybrid, infergate.ModeBatch:
		default:
			return req, infergate.Errorf(infergate.EInvalid, "mode %q: want realtime, hybrid or batch", req.Mode)
		}
	case "unpin":
	default:
		return req, infergate.Errorf(infergate.EInvalid, "action %q: want pin, unpin or switch", req.Action)
	}
	if req.Policy != nil && req.Action != "switch" {
		return req, infergate.Errorf(infergate.EInvalid, "policy is for action switch only")
	}
	return req, nil
}
