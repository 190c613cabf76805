package kserve

import (
	"strconv"
	"strings"

	"github.com/infergate/infergate"
)

// ValidateInputs checks decoded inputs against a model's input specs and
// reorders req.Inputs into spec order. Every spec must be matched by
// exactly one input (unknown, duplicate and missing names are errors), with
// the same datatype and rank, equal fixed dimensions, and dynamic (-1)
// dimensions of at least 1: empty tensors are refused because runtimes and
// batch concatenation handle them poorly and no model needs them.
//
// For batchable models (maxBatch > 0) the first dimension is the batch
// dimension: all inputs must share it and 1 <= batch <= maxBatch; the
// batch is returned. Non-batchable models return 1.
//
// Errors are EInvalid and name the input, the expectation and what came,
// e.g. `input "input": shape [1,700] does not match model shape [-1,768]`.
func ValidateInputs(req *InferRequest, specs []infergate.TensorSpec, maxBatch int) (batch int, err error) {
	in := req.Inputs
	// where[j] is the index in `in` of the input for spec j, or -1.
	var whereBuf [16]int
	where := whereBuf[:0]
	for range specs {
		where = append(where, -1)
	}
	for i := range in {
		j := specIndex(specs, in[i].Name)
		if j < 0 {
			return 0, invalid("unknown input %q (model inputs: %s)", in[i].Name, specNames(specs))
		}
		if where[j] >= 0 {
			return 0, invalid("duplicate input %q", in[i].Name)
		}
		where[j] = i
	}
	for j := range specs {
		if where[j] < 0 {
			return 0, invalid("missing input %q", specs[j].Name)
		}
	}
	batch = -1
	batchFrom := ""
	for j := range specs {
		sp, t := &specs[j], &in[where[j]]
		if t.DataType != sp.DataType {
			return 0, invalid("input %q: datatype %s does not match model datatype %s", t.Name, t.DataType, sp.DataType)
		}
		if len(t.Shape) != len(sp.Shape) {
			return 0, invalid("input %q: shape %s does not match model shape %s (rank %d, want %d)",
				t.Name, formatShape(t.Shape), formatShape(sp.Shape), len(t.Shape), len(sp.Shape))
		}
		for k, want := range sp.Shape {
			got := t.Shape[k]
			if want >= 0 && got != want {
				return 0, invalid("input %q: shape %s does not match model shape %s",
					t.Name, formatShape(t.Shape), formatShape(sp.Shape))
			}
			if want < 0 && got < 1 {
				return 0, invalid("input %q: shape %s does not match model shape %s (dynamic dimensions must be at least 1)",
					t.Name, formatShape(t.Shape), formatShape(sp.Shape))
			}
		}
		if maxBatch <= 0 || len(t.Shape) == 0 {
			continue
		}
		b := t.Shape[0]
		if batch < 0 {
			if b < 1 {
				return 0, invalid("input %q: batch size %d must be at least 1", t.Name, b)
			}
			if b > int64(maxBatch) {
				return 0, invalid("input %q: batch size %d exceeds the model's max batch size %d", t.Name, b, maxBatch)
			}
			batch, batchFrom = int(b), t.Name
		} else if b != int64(batch) {
			return 0, invalid("input %q: batch size %d does not match batch size %d of input %q", t.Name, b, batch, batchFrom)
		}
	}
	if batch < 0 {
		batch = 1
	}
	inOrder := true
	for j, i := range where {
		if i != j {
			inOrder = false
			break
		}
	}
	if !inOrder {
		sorted := make([]infergate.Tensor, len(in))
		for j, i := range where {
			sorted[j] = in[i]
		}
		req.Inputs = sorted
	}
	return batch, nil
}

func specIndex(specs []infergate.TensorSpec, name string) int {
	for j := range specs {
		if specs[j].Name == name {
			return j
		}
	}
	return -1
}

// specNames lists spec names for an error message, at most 8.
func specNames(specs []infergate.TensorSpec) string {
	var b strings.Builder
	for j := range specs {
		if j == 8 {
			b.WriteString(", ... (" + strconv.Itoa(len(specs)) + " in all)")
			break
		}
		if j > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(specs[j].Name))
	}
	return b.String()
}
