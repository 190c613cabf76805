package remote

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/infergate/infergate"
)

func TestParseMetadata(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		in, out   []infergate.TensorSpec
		code, msg string
	}{
		{
			name: "triton",
			body: `{"name":"resnet","versions":["1"],"platform":"onnxruntime_onnx",
				"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3,224,224]}],
				"outputs":[{"name":"y","datatype":"FP16","shape":[-1,1000]},{"name":"z","datatype":"INT64","shape":[-1]}]}`,
			in:  []infergate.TensorSpec{{Name: "x", DataType: infergate.FP32, Shape: []int64{-1, 3, 224, 224}}},
			out: []infergate.TensorSpec{{Name: "y", DataType: infergate.FP16, Shape: []int64{-1, 1000}}, {Name: "z", DataType: infergate.INT64, Shape: []int64{-1}}},
		},
		{
			name: "unknown fields and a scalar",
			body: `{"name":"m","parameters":{"a":1},"inputs":[{"name":"a","datatype":"BOOL","shape":[],"parameters":{}}],
				"outputs":[{"name":"b","datatype":"UINT8","shape":[2,0]}],"extra":[1,{}]}`,
			in:  []infergate.TensorSpec{{Name: "a", DataType: infergate.BOOL, Shape: []int64{}}},
			out: []infergate.TensorSpec{{Name: "b", DataType: infergate.UINT8, Shape: []int64{2, 0}}},
		},
		{name: "v2 error", body: `{"error":"Request for unknown model"}`, code: infergate.EInternal, msg: "unknown model"},
		{name: "not JSON", body: `<html>`, code: infergate.EInvalid},
		{name: "array", body: `[]`, code: infergate.EInvalid},
		{name: "no inputs", body: `{"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`, code: infergate.EInvalid, msg: "no inputs"},
		{name: "no outputs", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}],"outputs":[]}`, code: infergate.EInvalid, msg: "no outputs"},
		{name: "no name", body: `{"inputs":[{"datatype":"FP32","shape":[1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EInvalid, msg: "inputs[0] has no name"},
		{name: "duplicate", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]},{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EInvalid, msg: `duplicate output "y"`},
		{name: "BYTES", body: `{"inputs":[{"name":"x","datatype":"BYTES","shape":[-1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EUnprocess, msg: `datatype "BYTES"`},
		{name: "lower-case datatype", body: `{"inputs":[{"name":"x","datatype":"fp32","shape":[-1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EUnprocess},
		{name: "no shape", body: `{"inputs":[{"name":"x","datatype":"FP32"}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EInvalid, msg: "no shape"},
		{name: "dimension -2", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[-2]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EInvalid, msg: "dimension -2"},
		{name: "fractional dimension", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1.5]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EInvalid},
		{name: "huge", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,65536,65536]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EInvalid, msg: "too large"},
		{name: "rank 33", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[` + strings.Repeat("1,", 32) + `1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}]}`,
			code: infergate.EInvalid, msg: "rank 33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, out, err := parseMetadata([]byte(tt.body))
			if tt.code != "" {
				var e *infergate.Error
				if !errors.As(err, &e) || e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
					t.Fatalf("error %v, want %s containing %q", err, tt.code, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !specsEqual(in, tt.in) || !specsEqual(out, tt.out) {
				t.Errorf("got %v %v, want %v %v", in, out, tt.in, tt.out)
			}
		})
	}
}

func TestParseModelURL(t *testing.T) {
	tests := []struct {
		raw, meta, infer string // meta "" for an error
	}{
		{"http://h:8000/v2/models/m", "http://h:8000/v2/models/m", "http://h:8000/v2/models/m/infer"},
		{"https://h/v2/models/m/", "https://h/v2/models/m", "https://h/v2/models/m/infer"},
		{"http://h/v2/models/m/versions/3", "http://h/v2/models/m/versions/3", "http://h/v2/models/m/versions/3/infer"},
		{"http://gw/triton/v2/models/m?token=x", "http://gw/triton/v2/models/m?token=x", "http://gw/triton/v2/models/m/infer?token=x"},
		{"http://h/v2/models/a%2Fb", "http://h/v2/models/a%2Fb", "http://h/v2/models/a%2Fb/infer"},
		{"http://h/v2/models/versions", "http://h/v2/models/versions", "http://h/v2/models/versions/infer"},
		{"ftp://h/v2/models/m", "", ""},
		{"http:///v2/models/m", "", ""},
		{"http://h/v1/models/m", "", ""},
		{"http://h/v2/models/", "", ""},
		{"http://h/v2/models/m/infer", "", ""},
		{"http://h/v2/models/m/versions/", "", ""},
		{"http://h/v2/models/m#x", "", ""},
		{"http://h/v2/models/m%zz", "", ""},
	}
	for _, tt := range tests {
		u, err := parseModelURL(tt.raw)
		if tt.meta == "" {
			if err == nil {
				t.Errorf("parseModelURL(%q) = %+v, want an error", tt.raw, u)
			} else if infergate.ErrorCode(err) != infergate.EInvalid {
				t.Errorf("parseModelURL(%q): %v, want %s", tt.raw, err, infergate.EInvalid)
			}
			continue
		}
		if err != nil || u.meta != tt.meta || u.infer != tt.infer {
			t.Errorf("parseModelURL(%q) = %+v, %v; want %s and %s", tt.raw, u, err, tt.meta, tt.infer)
		}
	}
}

// FuzzMetadata: parseMetadata never panics, and what it accepts is a
// valid model description that reads back the same.
func FuzzMetadata(f *testing.F) {
	for _, s := range []string{
		`{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}`,
		`{"inputs":[{"name":"a","datatype":"BOOL","shape":[]}],"outputs":[{"name":"b","datatype":"INT8","shape":[2,0,-1]}],"versions":["1"]}`,
		`{"error":"x"}`,
		`{"inputs":[{"name":"x","datatype":"BYTES","shape":[-1]}],"outputs":[]}`,
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,65536,65536]}]}`,
		`{"inputs":null}`,
		`[1]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<16 {
			return
		}
		in, out, err := parseMetadata(body)
		if err != nil {
			if _, ok := err.(*infergate.Error); !ok {
				t.Fatalf("error %v is a %T, not an *infergate.Error", err, err)
			}
			return
		}
		for _, specs := range [][]infergate.TensorSpec{in, out} {
			if len(specs) == 0 || len(specs) > maxMetaTensors {
				t.Fatalf("%d specs accepted", len(specs))
			}
			seen := map[string]bool{}
			for _, s := range specs {
				if s.Name == "" || seen[s.Name] || !s.DataType.Valid() || len(s.Shape) > maxMetaRank {
					t.Fatalf("invalid spec accepted: %+v", s)
				}
				seen[s.Name] = true
				for _, d := range s.Shape {
					if d < -1 {
						t.Fatalf("dimension %d accepted", d)
					}
				}
			}
		}
		again, err := json.Marshal(map[string]any{"inputs": in, "outputs": out})
		if err != nil {
			t.Fatal(err)
		}
		in2, out2, err := parseMetadata(again)
		if err != nil || !specsEqual(in, in2) || !specsEqual(out, out2) {
			t.Fatalf("round trip: %v; %v %v, then %v %v", err, in, out, in2, out2)
		}
	})
}

// FuzzModelURL: parseModelURL never panics, and the URLs it derives are
// accepted again as the same model.
func FuzzModelURL(f *testing.F) {
	for _, s := range []string{
		"http://h:8000/v2/models/m", "https://u:p@h/x/v2/models/m/versions/2/?q=1", "http://h/v2/models/a%2Fb",
		"ftp://h/v2/models/m", "http://h/v2/models/", "http://[::1]:80/v2/models/m",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := parseModelURL(raw)
		if err != nil {
			return
		}
		if !IsRemote(u.meta) {
			t.Fatalf("%q: metadata URL %q is not remote", raw, u.meta)
		}
		again, err := parseModelURL(u.meta)
		if err != nil || again != u {
			t.Fatalf("%q: metadata URL %q parses as %+v, %v; first %+v", raw, u.meta, again, err, u)
		}
		iu, err := url.Parse(u.infer)
		if err != nil || !strings.HasSuffix(iu.Path, "/infer") {
			t.Fatalf("%q: infer URL %q: %v", raw, u.infer, err)
		}
	})
}
