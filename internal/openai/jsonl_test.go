package openai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

const (
	testEndpoint = "/v2/models/m/infer"
	testBody     = `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`
)

// inputLine is a valid input line with the given custom_id.
func inputLine(id string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":%s}`, id, testEndpoint, testBody)
}

// scanned is what one ScanInput call saw.
type scanned struct {
	errs  []LineError
	err   error
	lines []int
	ins   []*BatchInputLine
}

func scan(t *testing.T, file string, opts ScanOptions) scanned {
	t.Helper()
	var s scanned
	s.errs, s.err = ScanInput(strings.NewReader(file), opts, func(line int, in *BatchInputLine) error {
		s.lines = append(s.lines, line)
		s.ins = append(s.ins, in)
		return nil
	})
	return s
}

func TestScanInputGood(t *testing.T) {
	file := "\xef\xbb\xbf" + inputLine("a") + "\n" +
		"\n" +
		"   \t \r\n" +
		inputLine("b") + "\r\n" +
		`{"body":` + testBody + `,"url":"` + testEndpoint + `","extra":[1,{"x":null}],"method":"POST","custom_id":"c"}` + "\n" +
		"\n" +
		inputLine("d") // no final newline
	for _, opts := range []ScanOptions{
		{Endpoint: testEndpoint},
		{KnownURL: knownEndpoint},
		{},
	} {
		s := scan(t, file, opts)
		if s.err != nil || len(s.errs) != 0 {
			t.Fatalf("opts %+v: errs %v, err %v", opts, s.errs, s.err)
		}
		if want := []int{1, 4, 5, 7}; !slices.Equal(s.lines, want) {
			t.Fatalf("lines %v, want %v", s.lines, want)
		}
		for i, id := range []string{"a", "b", "c", "d"} {
			in := s.ins[i]
			if in.CustomID != id || in.Method != "POST" || in.URL != testEndpoint || string(in.Body) != testBody {
				t.Errorf("line %d: %+v", s.lines[i], in)
			}
		}
	}
}

func TestScanInputKeepsLines(t *testing.T) {
	// The lines fn gets stay valid after later lines are read.
	var ins []*BatchInputLine
	file := inputLine("a") + "\n" + inputLine("b") + "\n" + inputLine("c") + "\n"
	_, err := ScanInput(iotest.OneByteReader(strings.NewReader(file)), ScanOptions{}, func(_ int, in *BatchInputLine) error {
		ins = append(ins, in)
		return nil
	})
	if err != nil || len(ins) != 3 {
		t.Fatal(err, len(ins))
	}
	for i, id := range []string{"a", "b", "c"} {
		if ins[i].CustomID != id || string(ins[i].Body) != testBody {
			t.Errorf("line %d changed: %+v", i+1, ins[i])
		}
	}
}

func TestScanInputBadLines(t *testing.T) {
	withID := func(id, rest string) string { return `{"custom_id":"` + id + `",` + rest + `}` }
	good := `"method":"POST","url":"` + testEndpoint + `","body":` + testBody
	tests := []struct {
		name   string
		line   string // line 3 of the file, after a good line and a blank one
		opts   ScanOptions
		code   string
		param  string
		substr string
	}{
		{name: "truncated JSON", line: `{"custom_id":"x","method":`, code: CodeInvalidJSONLine},
		{name: "not JSON", line: `custom_id=x`, code: CodeInvalidJSONLine},
		{name: "array", line: `[` + inputLine("x") + `]`, code: CodeInvalidJSONLine},
		{name: "null", line: `null`, code: CodeInvalidJSONLine},
		{name: "string", line: `"x"`, code: CodeInvalidJSONLine},
		{name: "two objects", line: inputLine("x") + inputLine("y"), code: CodeInvalidJSONLine},
		{name: "trailing garbage", line: inputLine("x") + ` x`, code: CodeInvalidJSONLine},
		{name: "duplicate key", line: withID("x", `"method":"POST",`+good), code: CodeInvalidJSONLine, substr: "duplicate key"},
		{name: "missing custom_id", line: `{` + good + `}`, code: CodeMissingParameter, param: "custom_id"},
		{name: "null custom_id", line: `{"custom_id":null,` + good + `}`, code: CodeMissingParameter, param: "custom_id"},
		{name: "empty custom_id", line: withID("", good), code: CodeMissingParameter, param: "custom_id"},
		{name: "numeric custom_id", line: `{"custom_id":7,` + good + `}`, code: CodeInvalidType, param: "custom_id"},
		{name: "case-folded key", line: `{"Custom_ID":"x",` + good + `}`, code: CodeMissingParameter, param: "custom_id"},
		{name: "duplicate custom_id", line: inputLine("first"), code: CodeDuplicateCustomID, param: "custom_id", substr: "line 1"},
		{name: "missing method", line: withID("x", `"url":"`+testEndpoint+`","body":`+testBody), code: CodeMissingParameter, param: "method"},
		{name: "GET", line: withID("x", `"method":"GET","url":"`+testEndpoint+`","body":`+testBody), code: CodeInvalidValue, param: "method"},
		{name: "lowercase post", line: withID("x", `"method":"post","url":"`+testEndpoint+`","body":`+testBody), code: CodeInvalidValue, param: "method"},
		{name: "missing url", line: withID("x", `"method":"POST","body":`+testBody), code: CodeMissingParameter, param: "url"},
		{name: "url of another model", line: withID("x", `"method":"POST","url":"/v2/models/resnet/infer","body":`+testBody),
			opts: ScanOptions{Endpoint: testEndpoint}, code: CodeURLMismatch, param: "url"},
		{name: "unknown model url", line: withID("x", `"method":"POST","url":"/v2/models/nope/infer","body":`+testBody),
			opts: ScanOptions{KnownURL: knownEndpoint}, code: CodeModelNotFound, param: "url"},
		{name: "openai url", line: withID("x", `"method":"POST","url":"/v1/chat/completions","body":`+testBody),
			opts: ScanOptions{KnownURL: knownEndpoint}, code: CodeInvalidURL, param: "url"},
		{name: "missing body", line: withID("x", `"method":"POST","url":"`+testEndpoint+`"`), code: CodeMissingParameter, param: "body"},
		{name: "null body", line: withID("x", `"method":"POST","url":"`+testEndpoint+`","body":null`), code: CodeMissingParameter, param: "body"},
		{name: "array body", line: withID("x", `"method":"POST","url":"`+testEndpoint+`","body":[1]`), code: CodeInvalidType, param: "body"},
		{name: "no inputs", line: withID("x", `"method":"POST","url":"`+testEndpoint+`","body":{"inputs":[]}`), code: CodeInvalidBody, param: "body", substr: "no inputs"},
		{name: "shape mismatch", line: withID("x", `"method":"POST","url":"`+testEndpoint+`","body":{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1]}]}`),
			code: CodeInvalidBody, param: "body"},
		{name: "bad datatype", line: withID("x", `"method":"POST","url":"`+testEndpoint+`","body":{"inputs":[{"name":"x","shape":[1],"datatype":"FP8","data":[1]}]}`),
			code: CodeInvalidBody, param: "body"},
		{name: "too long", line: withID("x", `"pad":"`+strings.Repeat("p", 600)+`",`+good), opts: ScanOptions{MaxLineBytes: 512}, code: CodeLineTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Endpoint == "" && tt.opts.KnownURL == nil {
				tt.opts.Endpoint = testEndpoint
			}
			file := inputLine("first") + "\n\n" + tt.line + "\n" + inputLine("last") + "\n"
			s := scan(t, file, tt.opts)
			if s.err != nil {
				t.Fatal(s.err)
			}
			if len(s.errs) != 1 {
				t.Fatalf("errors %v, want one", s.errs)
			}
			e := s.errs[0]
			if e.Line != 3 || e.Code != tt.code || e.Param != tt.param || !strings.Contains(e.Message, tt.substr) {
				t.Errorf("got %+v, want line 3, code %s, param %q, message with %q", e, tt.code, tt.param, tt.substr)
			}
			if want := []int{1, 4}; !slices.Equal(s.lines, want) {
				t.Errorf("fn lines %v, want %v", s.lines, want)
			}
		})
	}
}

func TestScanInputLongLines(t *testing.T) {
	// Lines far past the limit, longer than the read buffer, are skipped
	// whole; the next line is read and numbered correctly.
	huge := `{"custom_id":"h","pad":"` + strings.Repeat("p", 3<<20) + `"}`
	exact := `{"custom_id":"e","method":"POST","url":"` + testEndpoint + `","body":` + testBody + `,"pad":"`
	exact += strings.Repeat("p", 4096-len(exact)-2) + `"}`
	if len(exact) != 4096 {
		t.Fatal(len(exact))
	}
	file := inputLine("a") + "\n" + huge + "\n" + exact + "\r\n" + exact[:len(exact)-2] + `p"}` + "\n" + inputLine("b") + "\n" + huge
	s := scan(t, file, ScanOptions{MaxLineBytes: 4096})
	if s.err != nil {
		t.Fatal(s.err)
	}
	want := []LineError{
		{Line: 2, Code: CodeLineTooLong, Message: "the line is longer than 4096 bytes"},
		{Line: 4, Code: CodeLineTooLong, Message: "the line is longer than 4096 bytes"},
		{Line: 6, Code: CodeLineTooLong, Message: "the line is longer than 4096 bytes"},
	}
	if !slices.Equal(s.errs, want) {
		t.Errorf("errors %+v\nwant %+v", s.errs, want)
	}
	if want := []int{1, 3, 5}; !slices.Equal(s.lines, want) {
		t.Errorf("fn lines %v, want %v", s.lines, want)
	}
	// The default limit is 1 MiB.
	s = scan(t, huge+"\n"+inputLine("a"), ScanOptions{})
	if len(s.errs) != 1 || s.errs[0].Code != CodeLineTooLong || s.errs[0].Line != 1 || !slices.Equal(s.lines, []int{2}) {
		t.Errorf("default limit: %+v, lines %v", s.errs, s.lines)
	}
}

func TestScanInputMaxErrors(t *testing.T) {
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, "{bad %d\n", i)
	}
	b.WriteString(inputLine("late") + "\n")
	s := scan(t, b.String(), ScanOptions{MaxErrors: 3})
	if s.err != nil || len(s.errs) != 3 {
		t.Fatalf("errs %v, err %v", s.errs, s.err)
	}
	for i, e := range s.errs {
		if e.Line != i+1 || e.Code != CodeInvalidJSONLine {
			t.Errorf("error %d: %+v", i, e)
		}
	}
	if len(s.lines) != 0 {
		t.Errorf("scanning went on past MaxErrors: fn saw %v", s.lines)
	}
	// The default cap is 100.
	b.Reset()
	for range 150 {
		b.WriteString("x\n")
	}
	if s := scan(t, b.String(), ScanOptions{}); len(s.errs) != DefaultMaxErrors || s.errs[99].Line != 100 {
		t.Errorf("default cap: %d errors", len(s.errs))
	}
}

func TestScanInputMaxLines(t *testing.T) {
	var b strings.Builder
	for i := range 5 {
		b.WriteString(inputLine(fmt.Sprint(i)) + "\n\n") // blank lines do not count
	}
	s := scan(t, b.String(), ScanOptions{MaxLines: 3})
	if s.err != nil {
		t.Fatal(s.err)
	}
	want := []LineError{{Line: 7, Code: CodeTooManyTasks, Message: "the file has more than 3 requests"}}
	if !slices.Equal(s.errs, want) {
		t.Errorf("errors %+v, want %+v", s.errs, want)
	}
	if !slices.Equal(s.lines, []int{1, 3, 5}) {
		t.Errorf("fn lines %v", s.lines)
	}
	// Exactly MaxLines is fine.
	if s := scan(t, b.String(), ScanOptions{MaxLines: 5}); len(s.errs) != 0 || len(s.lines) != 5 {
		t.Errorf("5 of 5: %+v, %v", s.errs, s.lines)
	}
}

func TestScanInputMaxBytes(t *testing.T) {
	file := inputLine("a") + "\n" + inputLine("b") + "\n" + inputLine("c") + "\n"
	n := int64(len(inputLine("a")) + 1)
	// Exactly at the limit: fine.
	if s := scan(t, file, ScanOptions{MaxBytes: 3 * n}); len(s.errs) != 0 || len(s.lines) != 3 {
		t.Fatalf("at the limit: %+v", s.errs)
	}
	// One byte short: the last line is not parsed as a truncated one.
	s := scan(t, file, ScanOptions{MaxBytes: 3*n - 1})
	want := []LineError{{Code: CodeFileTooLarge, Message: fmt.Sprintf("the file is larger than %d bytes", 3*n-1)}}
	if !slices.Equal(s.errs, want) || !slices.Equal(s.lines, []int{1, 2}) {
		t.Errorf("errors %+v, lines %v; want %+v", s.errs, s.lines, want)
	}
	// The reader is not read past the limit.
	cr := &countingReader{r: strings.NewReader(strings.Repeat(file, 100))}
	if _, err := ScanInput(cr, ScanOptions{MaxBytes: n}, nil); err != nil {
		t.Fatal(err)
	}
	if cr.n.Load() > n+1 {
		t.Errorf("read %d bytes with a limit of %d", cr.n.Load(), n)
	}
}

func TestScanInputEmpty(t *testing.T) {
	for _, file := range []string{"", "\n", "  \r\n\t\n", "\xef\xbb\xbf"} {
		s := scan(t, file, ScanOptions{})
		want := []LineError{{Code: CodeEmptyFile, Message: "the file has no requests"}}
		if s.err != nil || !slices.Equal(s.errs, want) {
			t.Errorf("%q: %+v, %v", file, s.errs, s.err)
		}
	}
}

func TestScanInputAbortsOnFnError(t *testing.T) {
	stop := errors.New("stop")
	file := inputLine("a") + "\n{bad\n" + inputLine("b") + "\n" + inputLine("c") + "\n"
	var lines []int
	errs, err := ScanInput(strings.NewReader(file), ScanOptions{}, func(line int, _ *BatchInputLine) error {
		lines = append(lines, line)
		if line == 3 {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Fatalf("err %v, want stop", err)
	}
	if len(errs) != 1 || errs[0].Line != 2 || !slices.Equal(lines, []int{1, 3}) {
		t.Errorf("errs %+v, lines %v", errs, lines)
	}
}

func TestScanInputReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader(inputLine("a")+"\n"+`{"custom`), iotest.ErrReader(boom))
	var lines []int
	errs, err := ScanInput(r, ScanOptions{}, func(line int, _ *BatchInputLine) error {
		lines = append(lines, line)
		return nil
	})
	if err != boom || len(errs) != 0 || !slices.Equal(lines, []int{1}) {
		t.Errorf("errs %+v, err %v, lines %v", errs, err, lines)
	}
}

func TestLineErrorConversions(t *testing.T) {
	e := LineError{Line: 4, Code: CodeURLMismatch, Param: "url", Message: "m"}
	if e.Error() != "line 4: m" || (LineError{Message: "f"}).Error() != "f" {
		t.Errorf("Error() = %q", e.Error())
	}
	be := e.BatchError()
	if be.Code != e.Code || be.Message != "m" || *be.Param != "url" || *be.Line != 4 {
		t.Errorf("%+v", be)
	}
	if NewBatchErrors(nil) != nil {
		t.Error("no errors must be nil")
	}
}

func TestWriteOutputLine(t *testing.T) {
	var b bytes.Buffer
	w := &writeCounter{w: &b}
	l := &BatchOutputLine{ID: "batch_req_1", CustomID: "a<b>&c", Response: &BatchResponse{StatusCode: 200, RequestID: "req_1", Body: json.RawMessage(`{ "x" : [1, 2] }`)}}
	if err := WriteOutputLine(w, l); err != nil {
		t.Fatal(err)
	}
	if err := WriteOutputLine(w, &BatchOutputLine{ID: "batch_req_2", CustomID: "b", Error: &BatchLineError{Code: "c", Message: "m"}}); err != nil {
		t.Fatal(err)
	}
	want := `{"id":"batch_req_1","custom_id":"a<b>&c","response":{"status_code":200,"request_id":"req_1","body":{"x":[1,2]}},"error":null}` + "\n" +
		`{"id":"batch_req_2","custom_id":"b","response":null,"error":{"code":"c","message":"m"}}` + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	if w.writes != 2 {
		t.Errorf("%d writes, want one a line", w.writes)
	}
	if err := WriteOutputLine(w, &BatchOutputLine{Response: &BatchResponse{Body: json.RawMessage(`{bad`)}}); err == nil {
		t.Error("an invalid body was written")
	}
}

func TestIDs(t *testing.T) {
	for _, tt := range []struct {
		f      func() string
		prefix string
	}{{NewBatchID, "batch_"}, {NewFileID, "file-"}} {
		a, b := tt.f(), tt.f()
		if !strings.HasPrefix(a, tt.prefix) || len(a) != len(tt.prefix)+32 || a == b {
			t.Errorf("ids %q, %q", a, b)
		}
	}
}

type writeCounter struct {
	w      io.Writer
	writes int
}

func (c *writeCounter) Write(p []byte) (int, error) { c.writes++; return c.w.Write(p) }

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestScanInputBoundedMemory scans a 50,000-line file that never exists
// whole in memory (it is generated through a pipe) and checks that the heap
// grows by a small fraction of the file: one line at a time plus 24 bytes
// a custom_id, however long the ids are.
func TestScanInputBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("scans 50,000 lines")
	}
	const n = DefaultMaxLines
	data := strings.Repeat("0.25,", 63) + "0.25"
	body := `{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[` + data + `]}]}`
	idPad := strings.Repeat("i", 100)

	runtime.GC()
	var before, at runtime.MemStats
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 32<<10)
		for i := range n {
			fmt.Fprintf(bw, `{"custom_id":"request-%06d-%s","method":"POST","url":"%s","body":%s}`+"\n", i, idPad, testEndpoint, body)
		}
		_ = bw.Flush()
		_ = pw.Close()
	}()
	cr := &countingReader{r: pr}
	count := 0
	errs, err := ScanInput(cr, ScanOptions{Endpoint: testEndpoint}, func(line int, in *BatchInputLine) error {
		count++
		if line != count {
			return fmt.Errorf("line %d, want %d", line, count)
		}
		if count == n {
			// Every custom_id is held now; the lines before are garbage.
			runtime.GC()
			runtime.ReadMemStats(&at)
		}
		return nil
	})
	if err != nil || len(errs) != 0 || count != n {
		t.Fatalf("count %d, errs %v, err %v", count, errs, err)
	}
	size := cr.n.Load()
	growth := int64(at.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("file %d bytes (%.1f MiB), heap growth at the last line %d bytes (%.1f MiB, %.1f%% of the file)",
		size, float64(size)/(1<<20), growth, float64(growth)/(1<<20), 100*float64(growth)/float64(size))
	if size < 20<<20 {
		t.Fatalf("the file is only %d bytes; the test wants a large one", size)
	}
	if growth > size/8 {
		t.Errorf("heap grew by %d bytes scanning a %d-byte file: not bounded", growth, size)
	}
}

func TestScanInputOnErrorSeesEachErrorBeforeTheNextLine(t *testing.T) {
	good := `{"custom_id":"%s","method":"POST","url":"/v2/models/m/infer","body":{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}}` + "\n"
	in := fmt.Sprintf(good, "a") + "not json\n" + fmt.Sprintf(good, "b") + fmt.Sprintf(good, "a")
	var events []string
	errs, err := ScanInput(strings.NewReader(in), ScanOptions{OnError: func(e LineError) { events = append(events, fmt.Sprintf("error %d", e.Line)) }},
		func(line int, _ *BatchInputLine) error {
			events = append(events, fmt.Sprintf("line %d", line))
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"line 1", "error 2", "line 3", "error 4"}
	if fmt.Sprint(events) != fmt.Sprint(want) || len(errs) != 2 {
		t.Fatalf("events %v (errors %v), want %v", events, errs, want)
	}
}
