package openai

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/kserve"
)

func FuzzScanInput(f *testing.F) {
	f.Add([]byte(inputLine("a") + "\n" + inputLine("b") + "\n"))
	f.Add([]byte("\xef\xbb\xbf" + inputLine("a") + "\r\n\r\n" + inputLine("a")))
	f.Add([]byte(`{"custom_id":"x","method":"POST","url":"/v2/models/m/versions/1/infer","body":{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[1,2]}]}}`))
	f.Add([]byte(`{"custom_id":"x","custom_id":"y"}` + "\n[]\nnull\n{\n\"\\ud800\"\n"))
	f.Add([]byte(`{"custom_id":"x","method":"POST","url":"/v2/models/m/infer","body":{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}}`))
	f.Add([]byte(`{"custom_id":"x","method":"POST","url":"/v2/models/zz/infer","body":{}}` + "\n" + strings.Repeat("y", 300)))
	f.Add([]byte("\n\n\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxLine, maxLines, maxErrors = 256, 8, 4
		maxBytes := int64(1024)
		for _, opts := range []ScanOptions{
			{Endpoint: testEndpoint, MaxLineBytes: maxLine, MaxLines: maxLines, MaxErrors: maxErrors, MaxBytes: maxBytes},
			{KnownURL: knownEndpoint, MaxLineBytes: maxLine, MaxLines: maxLines, MaxErrors: maxErrors, MaxBytes: maxBytes},
		} {
			physical := bytes.Count(data, []byte("\n")) + 1
			prev := 0
			ids := map[string]bool{}
			errs, err := ScanInput(bytes.NewReader(data), opts, func(line int, in *BatchInputLine) error {
				if line <= prev || line > physical {
					t.Fatalf("line %d after %d (file has %d lines)", line, prev, physical)
				}
				prev = line
				if in.CustomID == "" || ids[in.CustomID] || in.Method != "POST" {
					t.Fatalf("line %d passed: %+v", line, in)
				}
				ids[in.CustomID] = true
				if opts.Endpoint != "" && in.URL != opts.Endpoint {
					t.Fatalf("line %d: url %q", line, in.URL)
				}
				if opts.KnownURL != nil && !knownEndpoint(in.URL) {
					t.Fatalf("line %d: unknown url %q", line, in.URL)
				}
				if _, err := kserve.DecodeInferRequest(in.Body, -1, kserve.Limits{}); err != nil {
					t.Fatalf("line %d: body does not decode: %v", line, err)
				}
				if !json.Valid(in.Body) {
					t.Fatalf("line %d: body is not JSON", line)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("err %v from an in-memory reader", err)
			}
			if len(errs) > maxErrors+1 {
				t.Fatalf("%d errors, cap %d", len(errs), maxErrors)
			}
			if len(ids) > maxLines {
				t.Fatalf("%d requests passed, limit %d", len(ids), maxLines)
			}
			last := 0
			for _, e := range errs {
				if e.Code == "" || e.Message == "" {
					t.Fatalf("incomplete error %+v", e)
				}
				if e.Line == 0 {
					if e.Code != CodeEmptyFile && e.Code != CodeFileTooLarge {
						t.Fatalf("error without a line: %+v", e)
					}
					continue
				}
				if e.Line <= last || e.Line > physical {
					t.Fatalf("error line %d after %d (file has %d lines)", e.Line, last, physical)
				}
				last = e.Line
			}
			if int64(len(data)) > maxBytes && (len(errs) == 0 || errs[len(errs)-1].Code != CodeFileTooLarge) {
				// Unless scanning stopped earlier for too many errors
				// or requests.
				if len(errs) < maxErrors && (len(errs) == 0 || errs[len(errs)-1].Code != CodeTooManyTasks) {
					t.Fatalf("%d-byte file over the %d limit: errors %+v", len(data), maxBytes, errs)
				}
			}
		}
	})
}

func FuzzCreateBatchRequest(f *testing.F) {
	f.Add([]byte(`{"input_file_id":"file-1","endpoint":"/v2/models/m/infer","completion_window":"24h"}`))
	f.Add([]byte(`{"input_file_id":"file-1","endpoint":"/v2/models/m/versions/1/infer","completion_window":"1h","metadata":{"a":"b"}}`))
	f.Add([]byte(`{"input_file_id":"","endpoint":"/v1/chat/completions","completion_window":"48h"}`))
	f.Add([]byte(`{"input_file_id":"f","endpoint":"/v2/models/\u00e9/infer","completion_window":"6h","metadata":{"` + strings.Repeat("k", 65) + `":"v"}}`))
	f.Add([]byte(`{"metadata":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r CreateBatchRequest
		if json.Unmarshal(data, &r) != nil {
			return
		}
		for _, known := range []func(string) bool{nil, knownEndpoint} {
			err := r.Validate(known)
			if err == nil {
				if _, _, ok := ParseEndpoint(r.Endpoint); !ok || r.InputFileID == "" || len(r.Metadata) > MaxMetadataPairs {
					t.Fatalf("accepted %+v", r)
				}
				if known != nil && !known(r.Endpoint) {
					t.Fatalf("accepted an unknown endpoint %q", r.Endpoint)
				}
				if d, err := r.Window(); err != nil || d <= 0 {
					t.Fatalf("valid request, Window = %v, %v", d, err)
				}
				continue
			}
			ie, ok := err.(*infergate.Error)
			if !ok || ie.Code != infergate.EInvalid || ErrorParam(err) == "" || !strings.HasPrefix(ie.Message, ErrorParam(err)) {
				t.Fatalf("error %#v", err)
			}
		}
	})
}
