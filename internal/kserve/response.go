package kserve

import (
	"github.com/infergate/infergate"
)

// DecodeInferResponse decodes a v2 infer response (the client side).
// headerLen < 0 means the whole body is JSON; otherwise body[:headerLen] is
// the JSON header and the rest holds the binary outputs, in output order.
// Binary outputs alias body when it is aligned for their element type.
//
// A body carrying {"error": "..."} (the v2 error object) yields an
// *infergate.Error with code EInternal and the server's message.
func DecodeInferResponse(body []byte, headerLen int) (*InferResponse, error) {
	header, bin, err := split(body, headerLen)
	if err != nil {
		return nil, err
	}
	d := decoder{s: scanner{b: header}, lim: responseLimits, kind: "output"}
	resp := &InferResponse{}
	var sizes []int64
	var serverErr *string
	var seen uint8
	const (
		seenName = 1 << iota
		seenVersion
		seenID
		seenParams
		seenOutputs
		seenError
	)
	if err := d.s.expect('{'); err != nil {
		return nil, err
	}
	for first := true; ; {
		ok, err := d.s.more('}', &first)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		k, err := d.s.key()
		if err != nil {
			return nil, err
		}
		var bit uint8
		switch string(k) {
		case "model_name":
			bit = seenName
		case "model_version":
			bit = seenVersion
		case "id":
			bit = seenID
		case "parameters":
			bit = seenParams
		case "outputs":
			bit = seenOutputs
		case "error":
			bit = seenError
		}
		if seen&bit != 0 {
			return nil, invalid("duplicate key %q in response", k)
		}
		seen |= bit
		switch bit {
		case seenName:
			resp.ModelName, err = d.stringValue("model_name")
		case seenVersion:
			resp.ModelVersion, err = d.stringValue("model_version")
		case seenID:
			resp.ID, err = d.stringValue("id")
		case seenParams:
			resp.Parameters, err = d.params("parameters")
		case seenOutputs:
			resp.Outputs, sizes, err = d.tensors()
		case seenError:
			var msg string
			if msg, err = d.stringValue("error"); err == nil {
				serverErr = &msg
			}
		default:
			err = d.s.skip(1)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := d.s.end(); err != nil {
		return nil, err
	}
	if serverErr != nil {
		return nil, &infergate.Error{Code: infergate.EInternal, Message: *serverErr}
	}
	if name, dup := duplicateName(resp.Outputs); dup {
		return nil, invalid("duplicate output %q", name)
	}
	if err := attachBinary(resp.Outputs, sizes, bin, "output"); err != nil {
		return nil, err
	}
	return resp, nil
}
