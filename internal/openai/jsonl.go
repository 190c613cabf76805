package openai

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/kserve"
)

// ScanOptions configure ScanInput. Zero fields take the defaults.
type ScanOptions struct {
	// Endpoint is the batch's endpoint. When set, every line's url must
	// equal it (OpenAI: "url_mismatch" otherwise).
	Endpoint string
	// KnownURL, used only when Endpoint is empty, reports whether a url
	// that parses as an infer endpoint (ParseEndpoint) is served. Nil
	// accepts every such url.
	KnownURL func(url string) bool
	// Limits bound each line's v2 request (kserve defaults when zero).
	Limits kserve.Limits
	// MaxLineBytes is the longest line, without its line ending
	// (default 1 MiB).
	MaxLineBytes int
	// MaxLines is the most requests (non-blank lines) a file may hold
	// (default 50,000, OpenAI's limit).
	MaxLines int
	// MaxBytes is the largest file (default 200 MiB; OpenAI documents
	// "up to 200 MB").
	MaxBytes int64
	// MaxErrors is how many line errors are collected before scanning
	// stops (default 100).
	MaxErrors int
	// OnError, if set, is called with each error as it is found, before
	// the next line is read: a consumer inserting the valid lines can stop
	// at the first.
	OnError func(LineError)
}

// Defaults of ScanOptions.
const (
	DefaultMaxLineBytes = 1 << 20
	DefaultMaxLines     = 50_000
	DefaultMaxBytes     = 200 << 20
	DefaultMaxErrors    = 100
)

func (o ScanOptions) withDefaults() ScanOptions {
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.MaxLines <= 0 {
		o.MaxLines = DefaultMaxLines
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxErrors <= 0 {
		o.MaxErrors = DefaultMaxErrors
	}
	return o
}

// Line error codes. The first six are the codes OpenAI documents for batch
// input errors; the others are infergate's, or OpenAI's general codes.
const (
	CodeInvalidJSONLine   = "invalid_json_line"
	CodeDuplicateCustomID = "duplicate_custom_id"
	CodeURLMismatch       = "url_mismatch"
	CodeModelNotFound     = "model_not_found"
	CodeEmptyFile         = "empty_file"
	CodeTooManyTasks      = "too_many_tasks"

	CodeMissingParameter = "missing_required_parameter"
	CodeInvalidType      = "invalid_type"
	CodeInvalidValue     = "invalid_value"
	CodeInvalidURL       = "invalid_url"
	CodeInvalidBody      = "invalid_body"
	CodeLineTooLong      = "line_too_long"
	CodeFileTooLarge     = "file_too_large"
)

// LineError is a problem with a batch input file. Line is 1-based and
// counts every line, blank ones included; it is 0 for a problem with the
// whole file (empty_file, file_too_large). Param names the field at fault,
// if any.
type LineError struct {
	Line    int
	Code    string
	Message string
	Param   string
}

func (e LineError) Error() string {
	if e.Line == 0 {
		return e.Message
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Message)
}

// BatchError converts e to an entry of a batch's errors.
func (e LineError) BatchError() BatchError {
	be := BatchError{Code: e.Code, Message: e.Message, Param: String(e.Param)}
	if e.Line > 0 {
		line := e.Line
		be.Line = &line
	}
	return be
}

// NewBatchErrors converts line errors to a batch's errors; nil when there
// are none.
func NewBatchErrors(errs []LineError) *BatchErrors {
	if len(errs) == 0 {
		return nil
	}
	be := &BatchErrors{Object: ObjectList, Data: make([]BatchError, len(errs))}
	for i, e := range errs {
		be.Data[i] = e.BatchError()
	}
	return be
}

// ScanInput reads a batch input file, one JSON object a line, and checks
// every line: valid JSON, a non-empty custom_id unique in the file, method
// "POST", a url equal to opts.Endpoint (or, without one, an infer url that
// opts.KnownURL accepts) and a body that decodes as a v2 inference request.
// fn is called, in order, for each valid line, with its 1-based line
// number and a *BatchInputLine it may keep; it is called for the valid
// lines even when other lines are invalid, so a caller that wants all or
// nothing must drop what it saw when the returned slice is not empty. An
// error from fn stops the scan and is returned.
//
// Blank lines (whitespace only) are skipped, CRLF line endings and a UTF-8
// byte order mark are accepted. Every problem is a LineError (at most one
// per line); scanning stops after opts.MaxErrors of them, at the first
// request past opts.MaxLines (too_many_tasks) and as soon as more than
// opts.MaxBytes have been read (file_too_large). A file without requests
// is empty_file. The error is non-nil only for a read error or fn's error.
//
// Memory is bounded whatever the input: one line at most (a longer line is
// skipped as line_too_long without being held), plus a map entry per
// request to find duplicate custom_ids: each id is kept as 16 bytes of its
// SHA-256 with the line it was first seen on (24 bytes and the map's
// overhead), however long the ids are. TestScanInputBoundedMemory measures
// 1.7 MiB of live heap for 50,000 requests in a 27 MiB file.
func ScanInput(r io.Reader, opts ScanOptions, fn func(line int, in *BatchInputLine) error) ([]LineError, error) {
	opts = opts.withDefaults()
	s := scanner{opts: opts, seen: make(map[[16]byte]int)}
	// Reading stops one byte past the limit: enough to know it is passed.
	br := bufio.NewReaderSize(io.LimitReader(r, opts.MaxBytes+1), 64<<10)
	var (
		buf      []byte
		total    int64
		lineNo   int
		requests int
	)
	for {
		lineNo++
		buf = buf[:0]
		tooLong := false
		n := 0
		var readErr error
		for {
			chunk, err := br.ReadSlice('\n')
			n += len(chunk)
			total += int64(len(chunk))
			if !tooLong {
				// Two bytes of slack for a "\r\n" ending, trimmed below.
				if len(buf)+len(chunk) > opts.MaxLineBytes+2 {
					tooLong, buf = true, buf[:0]
				} else {
					buf = append(buf, chunk...)
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			readErr = err
			break
		}
		if total > opts.MaxBytes {
			s.addErr(LineError{Code: CodeFileTooLarge,
				Message: fmt.Sprintf("the file is larger than %d bytes", opts.MaxBytes)})
			return s.errs, nil
		}
		if readErr != nil && readErr != io.EOF {
			return s.errs, readErr
		}
		if n == 0 { // io.EOF with nothing left
			break
		}
		content := bytes.TrimSuffix(bytes.TrimSuffix(buf, []byte("\n")), []byte("\r"))
		if lineNo == 1 {
			content = bytes.TrimPrefix(content, []byte("\xef\xbb\xbf"))
		}
		if tooLong || len(content) > opts.MaxLineBytes {
			tooLong = true
		} else if len(bytes.TrimSpace(content)) == 0 {
			if readErr == io.EOF {
				break
			}
			continue
		}
		requests++
		if requests > opts.MaxLines {
			s.addErr(LineError{Line: lineNo, Code: CodeTooManyTasks,
				Message: fmt.Sprintf("the file has more than %d requests", opts.MaxLines)})
			return s.errs, nil
		}
		if tooLong {
			s.addErr(LineError{Line: lineNo, Code: CodeLineTooLong,
				Message: fmt.Sprintf("the line is longer than %d bytes", opts.MaxLineBytes)})
		} else if in, le := s.line(lineNo, content); le != nil {
			s.addErr(*le)
		} else if fn != nil {
			if err := fn(lineNo, in); err != nil {
				return s.errs, err
			}
		}
		if len(s.errs) >= opts.MaxErrors {
			return s.errs, nil
		}
		if readErr == io.EOF {
			break
		}
	}
	if requests == 0 {
		s.addErr(LineError{Code: CodeEmptyFile, Message: "the file has no requests"})
	}
	return s.errs, nil
}

// addErr records a line error and tells OnError.
func (s *scanner) addErr(e LineError) {
	s.errs = append(s.errs, e)
	if s.opts.OnError != nil {
		s.opts.OnError(e)
	}
}

// scanner holds ScanInput's state across lines.
type scanner struct {
	opts ScanOptions
	// seen maps the first 16 bytes of each custom_id's SHA-256 to the line
	// it was first seen on. A collision is out of reach: 2^-128 per pair,
	// and SHA-256 cannot be steered to one.
	seen map[[16]byte]int
	errs []LineError
}

// The fields of an input line, by index.
const (
	fieldCustomID = iota
	fieldMethod
	fieldURL
	fieldBody
	numFields
)

var fieldNames = [numFields]string{"custom_id", "method", "url", "body"}

// line checks one non-blank line.
func (s *scanner) line(lineNo int, b []byte) (*BatchInputLine, *LineError) {
	lineErr := func(code, param, format string, args ...any) *LineError {
		return &LineError{Line: lineNo, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
	}
	fields, err := splitObject(b)
	if err != nil {
		return nil, lineErr(CodeInvalidJSONLine, "", "this line is not a valid JSON object: %v", err)
	}
	var str [fieldBody]string
	for i := range fieldBody {
		raw, name := fields[i], fieldNames[i]
		if len(raw) == 0 || string(raw) == "null" {
			return nil, lineErr(CodeMissingParameter, name, "%s is required", name)
		}
		if raw[0] != '"' {
			return nil, lineErr(CodeInvalidType, name, "%s must be a string", name)
		}
		if err := json.Unmarshal(raw, &str[i]); err != nil {
			return nil, lineErr(CodeInvalidType, name, "%s must be a string", name)
		}
		if i == fieldCustomID {
			if le := s.customID(lineNo, str[i]); le != nil {
				return nil, le
			}
		}
	}
	id, method, url := str[fieldCustomID], str[fieldMethod], str[fieldURL]
	if method != "POST" {
		return nil, lineErr(CodeInvalidValue, "method", "method must be POST, not %s", clip(method))
	}
	switch {
	case s.opts.Endpoint != "":
		if url != s.opts.Endpoint {
			return nil, lineErr(CodeURLMismatch, "url", "url %s does not match the batch's endpoint %s", clip(url), clip(s.opts.Endpoint))
		}
	default:
		if _, _, ok := ParseEndpoint(url); !ok {
			return nil, lineErr(CodeInvalidURL, "url", "url %s is not an infergate endpoint (want /v2/models/{model}/infer)", clip(url))
		}
		if s.opts.KnownURL != nil && !s.opts.KnownURL(url) {
			return nil, lineErr(CodeModelNotFound, "url", "url %s is not served (unknown model or version)", clip(url))
		}
	}
	body := fields[fieldBody]
	if len(body) == 0 || string(body) == "null" {
		return nil, lineErr(CodeMissingParameter, "body", "body is required")
	}
	if body[0] != '{' {
		return nil, lineErr(CodeInvalidType, "body", "body must be a JSON object (a v2 inference request)")
	}
	req, err := kserve.DecodeInferRequest(body, -1, s.opts.Limits)
	if err != nil {
		return nil, lineErr(CodeInvalidBody, "body", "body: %s", infergate.ErrorMessage(err))
	}
	// body aliases the scanner's line buffer, which the next line reuses;
	// req's tensors were parsed into memory of their own.
	return &BatchInputLine{CustomID: id, Method: method, URL: url, Body: bytes.Clone(body), Request: req}, nil
}

// customID checks that the custom_id on line lineNo is set and new, and
// records it.
func (s *scanner) customID(lineNo int, id string) *LineError {
	if id == "" {
		return &LineError{Line: lineNo, Code: CodeMissingParameter, Param: "custom_id", Message: "custom_id must not be empty"}
	}
	sum := sha256.Sum256([]byte(id))
	key := [16]byte(sum[:16])
	if first, dup := s.seen[key]; dup {
		return &LineError{Line: lineNo, Code: CodeDuplicateCustomID, Param: "custom_id",
			Message: fmt.Sprintf("custom_id %s is already used on line %d", clip(id), first)}
	}
	s.seen[key] = lineNo
	return nil
}

// splitObject parses b as one JSON object and returns the raw values of
// the input line's fields (nil when absent). Unknown keys are allowed;
// keys match exactly (not case-insensitively, unlike encoding/json's
// struct decoding) and a field given twice is an error.
func splitObject(b []byte) (fields [numFields]json.RawMessage, err error) {
	err = kserve.ObjectMembers(b, func(key, value []byte) error {
		for i, name := range fieldNames {
			if string(key) == name {
				if fields[i] != nil {
					return fmt.Errorf("duplicate key %q", key)
				}
				fields[i] = value
			}
		}
		return nil
	})
	var ie *infergate.Error
	if errors.As(err, &ie) {
		err = errors.New(ie.Message)
	}
	return fields, err
}

// WriteOutputLine writes l as one JSON line, ending in "\n", in a single
// Write (see AppendOutputLine). HTML characters are not escaped.
func WriteOutputLine(w io.Writer, l *BatchOutputLine) error {
	b, err := AppendOutputLine(nil, l)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// newID returns prefix followed by 32 random hex digits.
func newID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return prefix + hex.EncodeToString(b[:])
}

// NewBatchID returns a batch id, "batch_" and 32 random hex digits.
func NewBatchID() string { return newID("batch_") }

// NewFileID returns a file id, "file-" and 32 random hex digits.
func NewFileID() string { return newID("file-") }
