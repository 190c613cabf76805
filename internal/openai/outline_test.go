package openai

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// encodeLine is the reference: encoding/json with HTML escaping off.
func encodeLine(l *BatchOutputLine) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(l)
	return b.Bytes(), err
}

func TestAppendOutputLineMatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "item-1", "a<b>&c", `quote " and \ backslash`, "tab\tnew\nline\r", "\x00\x01\x1f",
		"é ü 日本", "\u2028\u2029", "bad \xff utf8", "\b\f", "emoji 😀"}
	bodies := []string{"", `{"x":[1,2]}`, `{ "x" : [1, 2] , "s":"<&>"}`, `null`, `"s"`, `{"outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[0.5,-1e-7]}]}`}
	var lines []*BatchOutputLine
	for _, s := range strs {
		lines = append(lines,
			&BatchOutputLine{ID: "batch_req_1", CustomID: s, Error: &BatchLineError{Code: s, Message: s}},
			&BatchOutputLine{ID: s, CustomID: s},
		)
		for _, b := range bodies {
			lines = append(lines, &BatchOutputLine{ID: "batch_req_2", CustomID: s, Response: &BatchResponse{StatusCode: 200, RequestID: s, Body: json.RawMessage(b)}})
		}
	}
	lines = append(lines, &BatchOutputLine{Response: &BatchResponse{StatusCode: -3}, Error: &BatchLineError{}})
	for i, l := range lines {
		want, werr := encodeLine(l)
		got, gerr := AppendOutputLine([]byte("prefix"), l)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("line %d: error %v, encoding/json %v", i, gerr, werr)
		}
		if string(got) != "prefix"+string(want) {
			t.Errorf("line %d:\n got %q\nwant %q", i, got, "prefix"+string(want))
		}
	}
	// An invalid body is an error and leaves dst as it was.
	got, err := AppendOutputLine([]byte("keep"), &BatchOutputLine{Response: &BatchResponse{Body: json.RawMessage(`{bad`)}})
	if err == nil || string(got) != "keep" {
		t.Errorf("invalid body: %q, %v", got, err)
	}
}

func FuzzAppendOutputLine(f *testing.F) {
	f.Add("item-1", "msg", []byte(`{"a":1}`), 200)
	f.Add("a<\x00>\u2028", "\xff", []byte(`{ "a" : [1 ,2] }`), 400)
	f.Add("", "", []byte(`{bad`), 0)
	f.Fuzz(func(t *testing.T, id, msg string, body []byte, status int) {
		for _, l := range []*BatchOutputLine{
			{ID: id, CustomID: msg, Response: &BatchResponse{StatusCode: status, RequestID: id, Body: body}},
			{ID: id, CustomID: id, Error: &BatchLineError{Code: msg, Message: msg}},
		} {
			want, werr := encodeLine(l)
			got, gerr := AppendOutputLine(nil, l)
			if (werr != nil) != (gerr != nil) {
				t.Fatalf("error %v, encoding/json %v", gerr, werr)
			}
			if werr == nil && !bytes.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	})
}

func TestIDSource(t *testing.T) {
	s := NewIDSource()
	seen := map[string]bool{}
	for range 1000 {
		for _, id := range []string{s.LineID(), s.RequestID()} {
			if seen[id] {
				t.Fatalf("id %q twice", id)
			}
			seen[id] = true
		}
	}
	a, b := s.LineID(), NewIDSource().LineID()
	if !strings.HasPrefix(a, "batch_req_") || len(a) != len("batch_req_")+32 || a == b {
		t.Errorf("ids %q, %q", a, b)
	}
	if r := s.RequestID(); !strings.HasPrefix(r, "req_") || len(r) != len("req_")+32 {
		t.Errorf("request id %q", r)
	}
}

func BenchmarkOutputLine(b *testing.B) {
	body := json.RawMessage(`{"model_name":"mlp","outputs":[{"name":"y","datatype":"FP32","shape":[1,10],"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]}]}`)
	l := &BatchOutputLine{ID: "batch_req_0123456789abcdef0123456789abcdef", CustomID: "item-12345",
		Response: &BatchResponse{StatusCode: 200, RequestID: "req_0123456789abcdef0123456789abcdef", Body: body}}
	b.Run("encoding-json", func(b *testing.B) {
		var w bytes.Buffer
		for range b.N {
			w.Reset()
			enc := json.NewEncoder(&w)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(l)
		}
	})
	b.Run("append", func(b *testing.B) {
		var dst []byte
		for range b.N {
			dst, _ = AppendOutputLine(dst[:0], l)
		}
	})
}

// TestOutputLineFields pins the fields AppendOutputLine writes by hand: a
// field added to these types must be added there too (and here).
func TestOutputLineFields(t *testing.T) {
	for _, tc := range []struct {
		v    any
		tags []string
	}{
		{BatchOutputLine{}, []string{"id", "custom_id", "response", "error"}},
		{BatchResponse{}, []string{"status_code", "request_id", "body"}},
		{BatchLineError{}, []string{"code", "message"}},
	} {
		typ := reflect.TypeOf(tc.v)
		var tags []string
		for i := range typ.NumField() {
			tags = append(tags, typ.Field(i).Tag.Get("json"))
		}
		if !reflect.DeepEqual(tags, tc.tags) {
			t.Errorf("%s: json tags %q, AppendOutputLine writes %q", typ.Name(), tags, tc.tags)
		}
	}
}
