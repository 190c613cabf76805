package loadgen

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"

	"github.com/infergate/infergate"
)

const (
	// numBodies is how many distinct request bodies Run pre-builds and
	// cycles through: enough variety that no cache keyed on the input hides
	// the work, few enough that building them costs nothing.
	numBodies = 16
	// maxBodyBytes bounds the memory the pre-built bodies take; large
	// tensors get fewer distinct bodies. Bodies get a quarter of it: the
	// fast transport's serialized requests hold up to one copy per class
	// (NumClasses = 3).
	maxBodyBytes = 64 << 20
)

// payload holds the pre-built request bodies and the headers that go with
// them.
type payload struct {
	bodies      [][]byte
	contentType []string
	headerLen   []string // Inference-Header-Content-Length; nil for JSON

	// requests[class][i] is the complete HTTP/1.1 request (head and
	// bodies[i]) for the fast transport; built by buildRequests for the
	// classes in the mix only, nil otherwise.
	requests [infergate.NumClasses][][]byte
}

// buildRequests serializes, for every class in classes and every body, the
// whole request the fast transport writes: request line, Host, User-Agent,
// Content-Type, Content-Length, the class header, Inference-Header-Content-
// Length for binary payloads, and the body. requestURI is the
// origin-form target ("/v2/models/m/infer"), host the Host header value.
//
// To keep the memory at one copy of the data per class, bodies[i] then
// points into the first class's requests (same bytes).
func (p *payload) buildRequests(requestURI, host string, classes []infergate.Class) {
	for _, cl := range classes {
		if p.requests[cl] != nil {
			continue
		}
		reqs := make([][]byte, len(p.bodies))
		for i, body := range p.bodies {
			head := p.requestHead(requestURI, host, cl, len(body))
			req := make([]byte, 0, len(head)+len(body))
			req = append(append(req, head...), body...)
			reqs[i] = req
		}
		p.requests[cl] = reqs
	}
	if len(classes) > 0 {
		for i, req := range p.requests[classes[0]] {
			n := len(req) - len(p.bodies[i])
			p.bodies[i] = req[n:len(req):len(req)]
		}
	}
}

// requestHead is the request line and header block of one request.
func (p *payload) requestHead(requestURI, host string, cl infergate.Class, bodyLen int) []byte {
	var b []byte
	b = append(b, "POST "...)
	b = append(b, requestURI...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUser-Agent: infergate-loadgen\r\nContent-Type: "...)
	b = append(b, p.contentType[0]...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(bodyLen), 10)
	b = append(b, "\r\n"+ClassHeader+": "...)
	b = append(b, cl.String()...)
	if p.headerLen != nil {
		b = append(b, "\r\nInference-Header-Content-Length: "...)
		b = append(b, p.headerLen[0]...)
	}
	return append(b, "\r\n\r\n"...)
}

// header returns a fresh header for one request; the value slices are shared
// and never modified.
func (p *payload) header(class []string) http.Header {
	h := make(http.Header, 3)
	h["Content-Type"] = p.contentType
	h[ClassHeader] = class // ClassHeader is already canonical
	if p.headerLen != nil {
		h["Inference-Header-Content-Length"] = p.headerLen
	}
	return h
}

// v2 request JSON, as far as the generator needs it.
type v2Tensor struct {
	Name       string         `json:"name"`
	Shape      []int64        `json:"shape,omitempty"`
	DataType   string         `json:"datatype,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Data       []float32      `json:"data,omitempty"`
}

type v2Request struct {
	Inputs  []v2Tensor `json:"inputs"`
	Outputs []v2Tensor `json:"outputs,omitempty"`
}

// buildPayload pre-builds the request bodies for cfg (defaults applied):
// one item of FP32 data with seeded random values in [-1, 1).
func buildPayload(cfg Config) (*payload, error) {
	shape := append([]int64{1}, cfg.ItemShape...)
	n := infergate.NumElements(shape)
	size := n * int64(infergate.FP32.Size())
	if n <= 0 || size > maxBodyBytes {
		return nil, fmt.Errorf("loadgen: input shape %v: %d elements is out of range", shape, n)
	}
	count := int(min(numBodies, max(1, maxBodyBytes/(size*4))))
	rng := rand.New(rand.NewPCG(cfg.Seed^0x5851f42d4c957f2d, cfg.Seed+1))
	data := make([]float32, n)
	p := &payload{}

	var header []byte
	if cfg.Payload == "binary" {
		var err error
		header, err = json.Marshal(v2Request{
			Inputs: []v2Tensor{{
				Name: cfg.InputName, Shape: shape, DataType: string(infergate.FP32),
				Parameters: map[string]any{"binary_data_size": size},
			}},
			Outputs: []v2Tensor{{
				Name: cfg.OutputName, Parameters: map[string]any{"binary_data": true},
			}},
		})
		if err != nil {
			return nil, err
		}
		p.contentType = []string{"application/octet-stream"}
		p.headerLen = []string{strconv.Itoa(len(header))}
	} else {
		p.contentType = []string{"application/json"}
	}

	for range count {
		for i := range data {
			data[i] = rng.Float32()*2 - 1
		}
		var body []byte
		if header != nil {
			body = make([]byte, len(header), len(header)+int(size))
			copy(body, header)
			for _, v := range data {
				body = binary.LittleEndian.AppendUint32(body, math.Float32bits(v))
			}
		} else {
			var err error
			body, err = json.Marshal(v2Request{Inputs: []v2Tensor{{
				Name: cfg.InputName, Shape: shape, DataType: string(infergate.FP32), Data: data,
			}}})
			if err != nil {
				return nil, err
			}
		}
		p.bodies = append(p.bodies, body)
	}
	return p, nil
}
