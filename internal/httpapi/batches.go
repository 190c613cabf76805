package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/openai"
)

// DefaultMaxUploadBytes is the default of Options.MaxUploadBytes: OpenAI's
// documented 200 MB file limit.
const DefaultMaxUploadBytes = 200 << 20

// maxCreateBatchBody caps the body of POST /v1/batches.
const maxCreateBatchBody = 1 << 20

// multipartSlack is what a multipart upload may carry besides the file's
// content: boundaries, part headers and the purpose field.
const multipartSlack = 64 << 10

// registerBatchRoutes adds the OpenAI-compatible Files and Batches routes.
// Every record is owned by "" until API keys scope them.
//
// Choices where OpenAI leaves room:
//
//   - The input file is validated synchronously on POST /v1/batches. As
//     OpenAI does, a file with bad lines still creates a batch: it is
//     created failed, with the per-line errors in "errors" and no items
//     (the answer is 200 with that batch). A good file creates an
//     in_progress batch with all its items.
//   - POST /v1/files wants the purpose field before the file part (as
//     OpenAI's examples and SDKs send them), so that nothing is stored
//     for a bad purpose.
//   - Cancelling a validating or in_progress batch moves it to cancelling
//     (the runner finishes it as cancelled); cancelling a batch already
//     cancelling or cancelled returns it as it is; cancelling a
//     finalizing or otherwise terminal batch is a 409.
func (s *Server) registerBatchRoutes(mux *http.ServeMux) {
	if s.opt.Clock == nil {
		s.opt.Clock = clock.Real{}
	}
	if s.opt.MaxUploadBytes <= 0 {
		s.opt.MaxUploadBytes = DefaultMaxUploadBytes
	}
	mux.HandleFunc("POST /v1/files", s.uploadFile)
	mux.HandleFunc("GET /v1/files", s.listFiles)
	mux.HandleFunc("GET /v1/files/{id}", s.getFile)
	mux.HandleFunc("GET /v1/files/{id}/content", s.fileContent)
	mux.HandleFunc("DELETE /v1/files/{id}", s.deleteFile)
	mux.HandleFunc("POST /v1/batches", s.createBatch)
	mux.HandleFunc("GET /v1/batches", s.listBatches)
	mux.HandleFunc("GET /v1/batches/{id}", s.getBatch)
	mux.HandleFunc("POST /v1/batches/{id}/cancel", s.cancelBatch)
}

// owner returns the tenant of a request: the name of its API key, or ""
// when the server has no keys.
func (s *Server) owner(r *http.Request) string {
	if p, ok := r.Context().Value(principalKey{}).(principal); ok {
		return p.name
	}
	return ""
}

// writeOpenAIError answers err in OpenAI's error shape, logging server
// errors first.
func (s *Server) writeOpenAIError(w http.ResponseWriter, err error) {
	if status, _ := openai.StatusAndType(err); status >= 500 {
		s.log.Error("internal error", "err", err)
	}
	openai.WriteErrorFrom(w, err)
}

func invalidParam(param, format string, args ...any) error {
	e := infergate.Errorf(infergate.EInvalid, format, args...)
	e.Err = &openai.ParamError{Param: param}
	return e
}

// listArgs reads the after and limit query parameters of a list.
func listArgs(r *http.Request) (after string, limit int, err error) {
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > jobs.MaxListLimit {
			return "", 0, invalidParam("limit", "limit: %q is not an integer from 1 to %d", v, jobs.MaxListLimit)
		}
		limit = n
	}
	return q.Get("after"), limit, nil
}

func fileObject(f *jobs.File) openai.FileObject {
	return openai.FileObject{
		ID: f.ID, Object: openai.ObjectFile, Bytes: f.Bytes, CreatedAt: f.CreatedAt.Unix(),
		Filename: f.Filename, Purpose: f.Purpose, Status: openai.FileStatusProcessed,
	}
}

// limitedReader reads at most n bytes and fails with ETooLarge past them.
type limitedReader struct {
	r   io.Reader
	n   int64 // bytes left
	max int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, infergate.Errorf(infergate.ETooLarge, "the file is larger than %d bytes", l.max)
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, infergate.Errorf(infergate.ETooLarge, "the file is larger than %d bytes", l.max)
	}
	return n, err
}

// uploadFile serves POST /v1/files: a multipart/form-data body with a
// purpose field ("batch") and a file part, in either order, streamed into
// the store.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) {
	limit := s.opt.MaxUploadBytes
	if r.ContentLength > limit+multipartSlack {
		s.writeOpenAIError(w, infergate.Errorf(infergate.ETooLarge, "the upload of %d bytes exceeds %d", r.ContentLength, limit))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "multipart/form-data" {
		s.writeOpenAIError(w, infergate.Errorf(infergate.EInvalid, "the body must be multipart/form-data with purpose and file"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit+multipartSlack)
	mr, err := r.MultipartReader()
	if err != nil {
		s.writeOpenAIError(w, infergate.Errorf(infergate.EInvalid, "bad multipart body: %v", err))
		return
	}
	purpose, filename := "", ""
	// The official SDKs send the parts in name order, file before
	// purpose. A file part that comes first is spooled to a temporary file
	// (disk, not memory) until the purpose is known.
	var spool *os.File
	defer func() {
		if spool != nil {
			_ = spool.Close()
			_ = os.Remove(spool.Name())
		}
	}()
	store := func(content io.Reader) {
		f := &jobs.File{Purpose: purpose, Filename: filename, Owner: s.owner(r)}
		if f.Filename == "" {
			f.Filename = "file"
		}
		if err := s.opt.Jobs.CreateFile(r.Context(), f, content); err != nil {
			s.writeOpenAIError(w, uploadReadError(err))
			return
		}
		// Drain the rest of the body, so that the client sees the answer.
		_, _ = io.Copy(io.Discard, r.Body)
		writeJSON(w, 200, fileObject(f))
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.writeOpenAIError(w, uploadReadError(err))
			return
		}
		switch part.FormName() {
		case "purpose":
			b, err := io.ReadAll(io.LimitReader(part, 256))
			if err != nil {
				s.writeOpenAIError(w, uploadReadError(err))
				return
			}
			purpose = strings.TrimSpace(string(b))
			if purpose != openai.PurposeBatch {
				s.writeOpenAIError(w, invalidParam("purpose", "purpose: %q is not supported (want %q)", purpose, openai.PurposeBatch))
				return
			}
		case "file":
			if spool != nil {
				s.writeOpenAIError(w, invalidParam("file", "only one file part is allowed"))
				return
			}
			filename = part.FileName()
			content := &limitedReader{r: part, n: limit, max: limit}
			if purpose != "" {
				store(content)
				return
			}
			if spool, err = os.CreateTemp("", "infergate-upload-*"); err != nil {
				s.writeOpenAIError(w, err)
				return
			}
			if _, err := io.Copy(spool, content); err != nil {
				s.writeOpenAIError(w, uploadReadError(err))
				return
			}
		default:
			// Unknown fields are ignored, as OpenAI's server does.
			_, _ = io.Copy(io.Discard, part)
		}
	}
	switch {
	case spool == nil:
		s.writeOpenAIError(w, invalidParam("file", "file is required"))
	case purpose == "":
		s.writeOpenAIError(w, invalidParam("purpose", "purpose is required"))
	default:
		if _, err := spool.Seek(0, io.SeekStart); err != nil {
			s.writeOpenAIError(w, err)
			return
		}
		store(spool)
	}
}

// uploadReadError classifies an error met while reading an upload: a body
// past its limit is a 413, a malformed body a 400; store errors pass.
func uploadReadError(err error) error {
	var mbe *http.MaxBytesError
	var ie *infergate.Error
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.As(err, &ie):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &infergate.Error{Code: infergate.ECanceled, Message: "the upload was cancelled", Err: err}
	}
	return &infergate.Error{Code: infergate.EInvalid, Message: "could not read the multipart body", Err: err}
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	after, limit, err := listArgs(r)
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	files, more, err := s.opt.Jobs.ListFiles(r.Context(), s.owner(r), after, limit)
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	data := make([]openai.FileObject, len(files))
	for i, f := range files {
		data[i] = fileObject(f)
	}
	writeJSON(w, 200, openai.NewList(data, func(f *openai.FileObject) string { return f.ID }, more))
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	f, err := s.opt.Jobs.GetFile(r.Context(), s.owner(r), r.PathValue("id"))
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	writeJSON(w, 200, fileObject(f))
}

func (s *Server) fileContent(w http.ResponseWriter, r *http.Request) {
	owner, id := s.owner(r), r.PathValue("id")
	f, err := s.opt.Jobs.GetFile(r.Context(), owner, id)
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	rc, err := s.opt.Jobs.OpenFileContent(r.Context(), owner, id)
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	defer rc.Close()
	ct := "application/octet-stream"
	if f.Purpose == jobs.PurposeBatch || f.Purpose == jobs.PurposeBatchOutput || strings.HasSuffix(f.Filename, ".jsonl") {
		ct = "application/jsonl"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.FormatInt(f.Bytes, 10))
	if _, err := io.Copy(w, rc); err != nil {
		// The status is sent: all that is left is to cut the response
		// short, which the client sees as a truncated body.
		s.log.Warn("file content cut short", "file", id, "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.opt.Jobs.DeleteFile(r.Context(), s.owner(r), id); err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	writeJSON(w, 200, map[string]any{"id": id, "object": openai.ObjectFile, "deleted": true})
}

// knownEndpoint reports whether an infer endpoint names a served model
// (and version).
func (s *Server) knownEndpoint(endpoint string) bool {
	name, version, ok := openai.ParseEndpoint(endpoint)
	if !ok {
		return false
	}
	m, err := s.eng.Model(name)
	return err == nil && (version == "" || version == m.Info.Version)
}

// requestHash digests the fields of a create-batch request that make it
// the same request: input file, endpoint, window and metadata (sorted).
func requestHash(req *openai.CreateBatchRequest) string {
	meta := make([][2]string, 0, len(req.Metadata))
	for _, k := range slices.Sorted(maps.Keys(req.Metadata)) {
		meta = append(meta, [2]string{k, req.Metadata[k]})
	}
	b, _ := json.Marshal(struct {
		InputFileID      string      `json:"input_file_id"`
		Endpoint         string      `json:"endpoint"`
		CompletionWindow string      `json:"completion_window"`
		Metadata         [][2]string `json:"metadata"`
	}{req.InputFileID, req.Endpoint, req.CompletionWindow, meta})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// errInvalidLines rolls back the insert of a file with invalid lines.
var errInvalidLines = errors.New("the input file has invalid lines")

// errStop ends a scan early when the consumer of the items stops.
var errStop = errors.New("stop")

// createBatch serves POST /v1/batches.
func (s *Server) createBatch(w http.ResponseWriter, r *http.Request) {
	var req openai.CreateBatchRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCreateBatchBody))
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			err = &infergate.Error{Code: infergate.EInvalid, Message: "the body is not a valid create-batch request: " + err.Error(), Err: err}
		}
		s.writeOpenAIError(w, err)
		return
	}
	if err := req.Validate(s.knownEndpoint); err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	window, err := req.Window()
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	ctx, owner := r.Context(), s.owner(r)
	f, err := s.opt.Jobs.GetFile(ctx, owner, req.InputFileID)
	if err != nil {
		if infergate.ErrorCode(err) == infergate.ENotFound {
			err = &infergate.Error{Code: infergate.ENotFound, Message: "no such file: " + req.InputFileID, Err: &openai.ParamError{Param: "input_file_id"}}
		}
		s.writeOpenAIError(w, err)
		return
	}
	if f.Purpose != jobs.PurposeBatch {
		s.writeOpenAIError(w, invalidParam("input_file_id", "input_file_id: file %s has purpose %q, not %q", f.ID, f.Purpose, jobs.PurposeBatch))
		return
	}
	b := &jobs.Batch{
		Owner: owner, InputFileID: req.InputFileID, Endpoint: req.Endpoint,
		CompletionWindow: req.CompletionWindow, Window: window, Metadata: req.Metadata,
		IdempotencyKey: r.Header.Get("Idempotency-Key"), RequestHash: requestHash(&req),
	}
	scan := openai.ScanOptions{Endpoint: req.Endpoint, KnownURL: s.knownEndpoint, Limits: s.opt.Limits, MaxBytes: s.opt.MaxUploadBytes}

	// One pass inside the store's transaction: each valid line is inserted
	// as it is read, its body decoded once and kept in binary form (see
	// encodeItemBody). Any invalid line rolls the whole insert back; the
	// batch is then created failed, with the lines' errors and no items.
	b.Status = jobs.StatusInProgress
	var lineErrs []openai.LineError
	invalid := false
	scan.OnError = func(openai.LineError) { invalid = true }
	items := func(yield func(*jobs.Item, error) bool) {
		errs, err := s.scanFile(ctx, owner, f.ID, scan, func(_ int, in *openai.BatchInputLine) error {
			if invalid {
				// The insert is rolled back: only the errors matter now.
				return nil
			}
			if !yield(&jobs.Item{CustomID: in.CustomID, Body: encodeItemBody(in.Request)}, nil) {
				return errStop
			}
			return nil
		})
		lineErrs = errs
		switch {
		case errors.Is(err, errStop):
		case err != nil:
			yield(nil, err)
		case len(errs) > 0:
			yield(nil, errInvalidLines)
		}
	}
	existed, err := s.opt.Jobs.CreateBatch(ctx, b, items)
	if errors.Is(err, errInvalidLines) {
		b.ID, b.Status = "", jobs.StatusFailed
		b.Errors = make([]jobs.LineError, len(lineErrs))
		for i, e := range lineErrs {
			b.Errors[i] = jobs.LineError{Code: e.Code, Message: e.Message, Param: e.Param, Line: e.Line}
		}
		existed, err = s.opt.Jobs.CreateBatch(ctx, b, nil)
	}
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	if !existed && s.opt.Notify != nil {
		s.opt.Notify()
	}
	writeJSON(w, 200, s.batchObject(b))
}

// scanFile runs openai.ScanInput over a stored file's content.
func (s *Server) scanFile(ctx context.Context, owner, id string, opts openai.ScanOptions, fn func(int, *openai.BatchInputLine) error) ([]openai.LineError, error) {
	rc, err := s.opt.Jobs.OpenFileContent(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return openai.ScanInput(rc, opts, fn)
}

func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	b, err := s.opt.Jobs.GetBatch(r.Context(), s.owner(r), r.PathValue("id"))
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	writeJSON(w, 200, s.batchObject(b))
}

func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	after, limit, err := listArgs(r)
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	batches, more, err := s.opt.Jobs.ListBatches(r.Context(), s.owner(r), after, limit)
	if err != nil {
		s.writeOpenAIError(w, err)
		return
	}
	data := make([]openai.BatchObject, len(batches))
	for i, b := range batches {
		data[i] = s.batchObject(b)
	}
	writeJSON(w, 200, openai.NewList(data, func(b *openai.BatchObject) string { return b.ID }, more))
}

// cancelBatch serves POST /v1/batches/{id}/cancel.
func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request) {
	ctx, owner, id := r.Context(), s.owner(r), r.PathValue("id")
	for range 5 { // the status may change under us: read it again
		b, err := s.opt.Jobs.GetBatch(ctx, owner, id)
		if err != nil {
			s.writeOpenAIError(w, err)
			return
		}
		switch b.Status {
		case jobs.StatusCancelling, jobs.StatusCancelled:
			writeJSON(w, 200, s.batchObject(b))
			return
		case jobs.StatusValidating, jobs.StatusInProgress:
		default:
			s.writeOpenAIError(w, infergate.Errorf(infergate.EConflict, "batch %s is %s and cannot be cancelled", id, b.Status))
			return
		}
		err = s.opt.Jobs.UpdateBatchStatus(ctx, id, b.Status, jobs.StatusCancelling, time.Time{})
		if infergate.ErrorCode(err) == infergate.EConflict {
			continue
		}
		if err != nil {
			s.writeOpenAIError(w, err)
			return
		}
		if s.opt.Notify != nil {
			s.opt.Notify()
		}
		if nb, err := s.opt.Jobs.GetBatch(ctx, owner, id); err == nil {
			b = nb
		} else {
			b.Status = jobs.StatusCancelling
		}
		writeJSON(w, 200, s.batchObject(b))
		return
	}
	s.writeOpenAIError(w, infergate.Errorf(infergate.EConflict, "batch %s keeps changing status; try again", id))
}

// batchObject converts a stored batch to its OpenAI object, with the
// infergate extension.
func (s *Server) batchObject(b *jobs.Batch) openai.BatchObject {
	o := openai.BatchObject{
		ID: b.ID, Object: openai.ObjectBatch, Endpoint: b.Endpoint,
		InputFileID: b.InputFileID, CompletionWindow: b.CompletionWindow, Status: string(b.Status),
		OutputFileID: openai.String(b.OutputFileID), ErrorFileID: openai.String(b.ErrorFileID),
		CreatedAt:    b.CreatedAt.Unix(),
		InProgressAt: openai.Unix(b.InProgressAt), ExpiresAt: openai.Unix(b.ExpiresAt),
		FinalizingAt: openai.Unix(b.FinalizingAt), CompletedAt: openai.Unix(b.CompletedAt),
		FailedAt: openai.Unix(b.FailedAt), ExpiredAt: openai.Unix(b.ExpiredAt),
		CancellingAt: openai.Unix(b.CancellingAt), CancelledAt: openai.Unix(b.CancelledAt),
		RequestCounts: openai.RequestCounts{Total: b.Total, Completed: b.Completed, Failed: b.Failed},
	}
	if len(b.Metadata) > 0 {
		o.Metadata = b.Metadata
	}
	if model, _, ok := openai.ParseEndpoint(b.Endpoint); ok {
		o.Model = model
	}
	if len(b.Errors) > 0 {
		errs := make([]openai.LineError, len(b.Errors))
		for i, e := range b.Errors {
			errs[i] = openai.LineError{Line: e.Line, Code: e.Code, Message: e.Message, Param: e.Param}
		}
		o.Errors = openai.NewBatchErrors(errs)
	}
	cost := b.CostUSD
	ext := &openai.BatchExtension{CostUSD: &cost}
	finished := b.Completed + b.Failed
	switch {
	case b.Total > 0:
		ext.Progress = min(float64(finished)/float64(b.Total), 1)
	case b.Status.Terminal():
		ext.Progress = 1
	}
	if s.opt.Rate != nil {
		if rate, ok := s.opt.Rate(b.ID); ok && rate > 0 {
			ext.ItemsPerSec = &rate
			// Past a year out, the estimate means nothing: leave it null.
			if remaining := b.Total - finished; remaining > 0 && b.Status.Active() && float64(remaining)/rate < 365*24*3600 {
				secs := float64(remaining) / rate
				at := s.opt.Clock.Now().Add(time.Duration(secs * float64(time.Second))).Unix()
				ext.EstimatedCompletionAt = &at
			}
		}
	}
	o.Infergate = ext
	return o
}
