package httpapi

import (
	"context"
	"encoding/binary"
	"encoding/json"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/kserve"
)

// Executor runs v2 inference request bodies in-process through a model's
// bulk lane: what the batch runner sends for each item of a batch.
type Executor struct {
	eng Engine
	lim kserve.Limits
}

// NewExecutor returns an Executor over eng; lim bounds decoded tensors as
// the infer handler's Options.Limits do.
func NewExecutor(eng Engine, lim kserve.Limits) *Executor {
	return &Executor{eng: eng, lim: lim}
}

// Execute runs one v2 inference request body (JSON only: no binary
// section) against model, in the bulk class, and returns the HTTP status
// and body the infer endpoint would have answered.
//
// Permanent failures, the ones a retry cannot fix (invalid, not_found,
// unprocessable and too_large errors: a malformed body, an unknown model,
// a wrong shape), come back as their 4xx status and the v2 JSON error body
// {"error","code"}, with a nil error. Transient failures (overloaded,
// unavailable, deadline, canceled, internal, and anything else) come back
// as err, for the caller to retry; status and resp are then zero.
//
// Outputs are always written as JSON, even if the request asks for binary
// data, since a batch output line holds a JSON body. body is a stored item
// body (see encodeItemBody): tensors handed to the scheduler may alias it,
// and a worker may still read them after ctx ends, so body must never be
// changed or reused. resp is freshly allocated and the caller's to keep.
func (x *Executor) Execute(ctx context.Context, model string, body []byte) (status int, resp []byte, err error) {
	out, err := x.execute(ctx, model, body)
	if err != nil {
		switch code := infergate.ErrorCode(err); code {
		case infergate.EInvalid, infergate.ENotFound, infergate.EUnprocess, infergate.ETooLarge:
			b, _ := json.Marshal(errorBody{Error: infergate.ErrorMessage(err), Code: code})
			return statusOf(code), b, nil
		}
		return 0, nil, err
	}
	return 200, out, nil
}

func (x *Executor) execute(ctx context.Context, model string, body []byte) ([]byte, error) {
	m, err := x.eng.Model(model)
	if err != nil {
		return nil, err
	}
	if !x.eng.Ready() {
		return nil, infergate.Errorf(infergate.EUnavailable, "server is not ready")
	}
	req, err := decodeItemBody(body, x.lim)
	if err != nil {
		return nil, err
	}
	items, err := kserve.ValidateInputs(req, m.Info.Inputs, m.Info.MaxBatchSize)
	if err != nil {
		return nil, err
	}
	want, err := requestedOutputs(req, m.Info.Outputs)
	if err != nil {
		return nil, err
	}
	res, err := m.Sched.Submit(ctx, infergate.ClassBulk, req.Inputs, items, 0)
	if err != nil {
		return nil, err
	}
	out := kserve.InferResponse{ModelName: m.Info.Name, ModelVersion: m.Info.Version, ID: req.ID}
	for _, t := range res.Outputs {
		if _, ok := want[t.Name]; ok || len(want) == 0 {
			out.Outputs = append(out.Outputs, t)
		}
	}
	buf, _ := kserve.AppendInferResponse(nil, &out, nil)
	return buf, nil
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
