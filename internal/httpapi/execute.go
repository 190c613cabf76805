package httpapi

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/batching"
	"github.com/infergate/infergate/internal/engine"
	"github.com/infergate/infergate/internal/jobs/runner"
	"github.com/infergate/infergate/internal/kserve"
)

// Executor runs v2 inference request bodies in-process through a model's
// bulk lane: what the batch runner sends for the items of a batch. It
// implements runner.Executor.
type Executor struct {
	eng Engine
	lim kserve.Limits
	// Group is the most items run as one request (default
	// DefaultExecGroup); 1 runs every item as its own request.
	Group int
}

// DefaultExecGroup is how many items of a batch job run as one request by
// default. A request per item costs the scheduler's per-request work (a
// goroutine, its wake-ups, a queue entry) for every item; a request of the
// bulk batch size could not fill the spare slots of a real-time batch. Eight
// items are an eighth of the first and still fit most spare slots.
const DefaultExecGroup = 8

// NewExecutor returns an Executor over eng; lim bounds decoded tensors as
// the infer handler's Options.Limits do.
func NewExecutor(eng Engine, lim kserve.Limits) *Executor {
	return &Executor{eng: eng, lim: lim, Group: DefaultExecGroup}
}

// Execute implements runner.Executor: each body is a v2 inference request
// (JSON only: no binary section), and its reply the HTTP status and body
// the infer endpoint would have answered it alone, in the bulk class.
//
// Items whose inputs have the same names, types and per-item shapes run
// together, up to Group items per request; the outputs are split back per
// item. If such a request fails with an error a retry cannot fix, each of
// its items runs again alone, so that one bad item never fails the others.
//
// Permanent failures, the ones a retry cannot fix (invalid, not_found,
// unprocessable and too_large errors: a malformed body, an unknown model,
// a wrong shape), come back as their 4xx status and the v2 JSON error body
// {"error","code"}, with a nil error. Transient failures (overloaded,
// unavailable, deadline, canceled, internal, and anything else) come back
// as Err, for the caller to retry; status and body are then zero.
//
// Outputs are always written as JSON, even if the request asks for binary
// data, since a batch output line holds a JSON body. The bodies are stored
// item bodies (see encodeItemBody): tensors handed to the scheduler may
// alias them, and a worker may still read them after ctx ends, so they
// must never be changed or reused. Reply bodies are freshly allocated and
// the caller's to keep.
func (x *Executor) Execute(ctx context.Context, model string, bodies [][]byte, done func(int, runner.Reply)) {
	m, err := x.eng.Model(model)
	if err == nil && !x.eng.Ready() {
		err = infergate.Errorf(infergate.EUnavailable, "server is not ready")
	}
	if err != nil {
		for i := range bodies {
			done(i, x.reply(nil, 0, err))
		}
		return
	}
	group := max(x.Group, 1)
	// A joined request is taken whole into a batch: it may not hold more
	// rows than the bulk lane forms now (its policy's maximum, 1 for
	// single, AIMD's current limit).
	rows := max(min(m.Info.MaxBatchSize, m.Sched.BatchLimit(infergate.ClassBulk)), 1)
	if m.Info.MaxBatchSize <= 0 {
		group = 1 // no batch dimension to join along
	}
	var chunks [][]execItem
	for i, body := range bodies {
		it := execItem{i: i}
		it.req, err = decodeItemBody(body, x.lim)
		if err == nil {
			it.items, err = kserve.ValidateInputs(it.req, m.Info.Inputs, m.Info.MaxBatchSize)
		}
		if err == nil {
			it.want, err = requestedOutputs(it.req, m.Info.Outputs)
		}
		if err != nil {
			done(i, x.reply(nil, 0, err))
			continue
		}
		// Into the first open chunk it fits: same input layout, room
		// left under both Group and the row limit.
		placed := false
		for c, ch := range chunks {
			total := 0
			for _, o := range ch {
				total += o.items
			}
			if len(ch) < group && total+it.items <= rows && joinable(ch[0].req, it.req) {
				chunks[c] = append(ch, it)
				placed = true
				break
			}
		}
		if !placed {
			chunks = append(chunks, []execItem{it})
		}
	}
	var wg sync.WaitGroup
	for _, ch := range chunks {
		wg.Go(func() { x.run(ctx, m, ch, done) })
	}
	wg.Wait()
}

// ExecuteOne runs one body as Execute does and returns its reply.
func (x *Executor) ExecuteOne(ctx context.Context, model string, body []byte) runner.Reply {
	var rep runner.Reply
	x.Execute(ctx, model, [][]byte{body}, func(_ int, r runner.Reply) { rep = r })
	return rep
}

// execItem is one decoded item of an Execute call.
type execItem struct {
	i     int // index in the call
	req   *kserve.InferRequest
	items int // its batch rows
	want  map[string]struct{}
}

// joinable reports whether two requests' inputs can be joined along the
// batch dimension: the same names in the same order, the same
// data types and the same shapes past the first dimension (every data type
// infergate serves has a fixed size).
func joinable(a, b *kserve.InferRequest) bool {
	if len(a.Inputs) != len(b.Inputs) {
		return false
	}
	for i := range a.Inputs {
		ta, tb := &a.Inputs[i], &b.Inputs[i]
		if ta.Name != tb.Name || ta.DataType != tb.DataType ||
			len(ta.Shape) == 0 || len(tb.Shape) == 0 || !slices.Equal(ta.Shape[1:], tb.Shape[1:]) {
			return false
		}
	}
	return true
}

// run runs a chunk of joinable items as one request and answers each.
func (x *Executor) run(ctx context.Context, m *engine.Model, ch []execItem, done func(int, runner.Reply)) {
	if len(ch) == 1 {
		it := ch[0]
		res, err := m.Sched.Submit(ctx, infergate.ClassBulk, it.req.Inputs, it.items, 0)
		if err != nil {
			done(it.i, x.reply(nil, 0, err))
			return
		}
		done(it.i, x.reply(x.encode(m, it, res.Outputs), res.Busy, nil))
		return
	}
	total := 0
	for _, it := range ch {
		total += it.items
	}
	inputs := make([]infergate.Tensor, len(ch[0].req.Inputs))
	for k, t := range ch[0].req.Inputs {
		size := 0
		for _, it := range ch {
			size += len(it.req.Inputs[k].Data)
		}
		data := make([]byte, 0, size)
		for _, it := range ch {
			data = append(data, it.req.Inputs[k].Data...)
		}
		shape := slices.Clone(t.Shape)
		shape[0] = int64(total)
		inputs[k] = infergate.Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: data}
	}
	res, err := m.Sched.Submit(ctx, infergate.ClassBulk, inputs, total, 0)
	if err == nil {
		err = batching.CheckRows(res.Outputs, total)
	}
	if err != nil {
		switch infergate.ErrorCode(err) {
		case infergate.EUnavailable, infergate.EDeadline, infergate.ECanceled, infergate.EOverloaded:
			// Nothing an item did: the same for each, retried later.
			for _, it := range ch {
				done(it.i, x.reply(nil, 0, err))
			}
		default:
			// Perhaps one item's fault: each alone (side by side, as they
			// would have run), so that only the ones that fail by
			// themselves fail. The failed run's busy time is in the
			// ledger but in no item's cost.
			var wg sync.WaitGroup
			for _, it := range ch {
				wg.Go(func() { x.run(ctx, m, []execItem{it}, done) })
			}
			wg.Wait()
		}
		return
	}
	off := 0
	for _, it := range ch {
		outs := batching.SplitRows(res.Outputs, total, off, it.items)
		off += it.items
		busy := time.Duration(float64(res.Busy) * float64(it.items) / float64(total))
		done(it.i, x.reply(x.encode(m, it, outs), busy, nil))
	}
}

// encode is an item's v2 JSON response with the outputs it asked for.
func (x *Executor) encode(m *engine.Model, it execItem, outs []infergate.Tensor) []byte {
	out := kserve.InferResponse{ModelName: m.Info.Name, ModelVersion: m.Info.Version, ID: it.req.ID}
	for _, t := range outs {
		if _, ok := it.want[t.Name]; ok || len(it.want) == 0 {
			out.Outputs = append(out.Outputs, t)
		}
	}
	buf, _ := kserve.AppendInferResponse(nil, &out, nil)
	return buf
}

// reply is the runner's reply for a response body or an error; busy is
// the item's share of the busy time that ran it, priced at the ledger's
// instance price.
func (x *Executor) reply(body []byte, busy time.Duration, err error) runner.Reply {
	if err != nil {
		switch code := infergate.ErrorCode(err); code {
		case infergate.EInvalid, infergate.ENotFound, infergate.EUnprocess, infergate.ETooLarge:
			b, _ := json.Marshal(errorBody{Error: infergate.ErrorMessage(err), Code: code})
			return runner.Reply{Status: statusOf(code), Body: b}
		}
		return runner.Reply{Err: err}
	}
	rep := runner.Reply{Status: 200, Body: body}
	if l := x.eng.Ledger(); l != nil {
		rep.CostUSD = busy.Hours() * l.PricePerHour()
	}
	return rep
}

// An item's stored body is either the v2 JSON request of its input line,
// or, for items created by this server, the same request decoded once at
// validation and kept in v2's binary tensor form, so that running it parses
// no numbers:
//
//	0x00, uvarint(len(header)), header (v2 JSON, binary_data_size per input), tensor data
//
// A JSON body starts with '{' or white space, never with 0x00.
const storedBinary = 0x00

// encodeItemBody returns req in the stored binary form.
func encodeItemBody(req *kserve.InferRequest) []byte {
	body, hl := kserve.AppendInferRequest(nil, req, true)
	out := make([]byte, 0, 1+binary.MaxVarintLen64+len(body))
	out = append(out, storedBinary)
	out = binary.AppendUvarint(out, uint64(hl))
	return append(out, body...)
}

// decodeItemBody decodes a stored body of either form. Tensors of the
// binary form alias body, which the caller must not change while they are
// in use (items' bodies are never reused).
func decodeItemBody(body []byte, lim kserve.Limits) (*kserve.InferRequest, error) {
	if len(body) == 0 || body[0] != storedBinary {
		return kserve.DecodeInferRequest(body, -1, lim)
	}
	hl, n := binary.Uvarint(body[1:])
	if n <= 0 || hl > uint64(len(body)-1-n) {
		return nil, infergate.Errorf(infergate.EInvalid, "corrupt stored request: bad header length")
	}
	return kserve.DecodeInferRequest(body[1+n:], int(hl), lim)
}
