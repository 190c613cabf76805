package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/infergate/infergate/internal/openai"
)

const batchUsage = `usage: infergate batch <command> [flags]

commands:
  submit FILE --model M [--window 24h] [--wait] [--out DIR] [--idempotency-key K] [--json]
              upload a JSONL file and create a batch on /v2/models/M/infer
  list [--limit N] [--json]
  status ID [--json]
  cancel ID
  results ID [--out DIR]
              download a finished batch's output and error files

Every command takes --url (default http://127.0.0.1:8080).
`

// batchPollInterval is how often submit --wait polls the batch.
const batchPollInterval = 500 * time.Millisecond

func runBatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, batchUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "submit":
		return runBatchSubmit(ctx, args[1:], stdout, stderr)
	case "list":
		return runBatchList(ctx, args[1:], stdout, stderr)
	case "status":
		return runBatchStatus(ctx, args[1:], stdout, stderr)
	case "cancel":
		return runBatchCancel(ctx, args[1:], stdout, stderr)
	case "results":
		return runBatchResults(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, batchUsage)
		return nil
	}
	fmt.Fprint(stderr, batchUsage)
	return fmt.Errorf("unknown batch command %q", args[0])
}

// parseInterspersed parses flags that may come before or after the
// positional arguments ("submit FILE --model m" as well as
// "submit --model m FILE") and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// batchFlagSet returns a flag set with --url registered.
func batchFlagSet(name string, stderr io.Writer, base *string) *flag.FlagSet {
	fs := flag.NewFlagSet("batch "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(base, "url", "http://127.0.0.1:8080", "base `URL` of the infergate server")
	return fs
}

// oneID parses the flags of a command that takes one batch id.
func oneID(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 || pos[0] == "" {
		return "", fmt.Errorf("usage: infergate %s ID [flags]", fs.Name())
	}
	return pos[0], nil
}

// apiError is an error answer of the server, in OpenAI's shape.
type apiError struct {
	Method, Path string
	Status       int
	Message      string
	Type         string
	Code, Param  string
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: HTTP %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Message)
	var extra []string
	if e.Code != "" {
		extra = append(extra, "code "+e.Code)
	}
	if e.Param != "" {
		extra = append(extra, "param "+e.Param)
	}
	if len(extra) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(extra, ", "))
	}
	return b.String()
}

// batchClient talks to the OpenAI-compatible Files and Batches API.
type batchClient struct {
	base string
	hc   *http.Client
	// key, from INFERGATE_API_KEY, is sent as a bearer token when set.
	key string
}

func newBatchClient(base string) (*batchClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http://HOST:PORT", base)
	}
	return &batchClient{base: strings.TrimRight(base, "/"), hc: &http.Client{}, key: os.Getenv("INFERGATE_API_KEY")}, nil
}

// send makes a request and returns the response when it is a 2xx; any
// other answer becomes an *apiError.
func (c *batchClient) send(ctx context.Context, method, path string, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &apiError{Method: method, Path: path, Status: resp.StatusCode}
	var er struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &er) == nil && er.Error != nil {
		e.Message, e.Type = er.Error.Message, er.Error.Type
		if er.Error.Code != nil {
			e.Code = *er.Error.Code
		}
		if er.Error.Param != nil {
			e.Param = *er.Error.Param
		}
	} else {
		e.Message = strings.TrimSpace(string(raw))
		if e.Message == "" {
			e.Message = "(empty body)"
		}
	}
	return nil, e
}

// call makes a request and decodes a JSON answer into out.
func (c *batchClient) call(ctx context.Context, method, path string, body io.Reader, header http.Header, out any) error {
	resp, err := c.send(ctx, method, path, body, header)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// upload streams the file at path to POST /v1/files as a multipart body,
// purpose first, without reading it into memory.
func (c *batchClient) upload(ctx context.Context, path string) (*openai.FileObject, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if st.IsDir() {
		return nil, fmt.Errorf("%s is a folder", path)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := mw.WriteField("purpose", openai.PurposeBatch)
		if err == nil {
			var part io.Writer
			if part, err = mw.CreateFormFile("file", filepath.Base(path)); err == nil {
				if _, err = io.Copy(part, f); err == nil {
					err = mw.Close()
				}
			}
		}
		pw.CloseWithError(err)
	}()
	var obj openai.FileObject
	err = c.call(ctx, http.MethodPost, "/v1/files", pr, http.Header{"Content-Type": {mw.FormDataContentType()}}, &obj)
	// Unblock the writer if the server answered before reading everything.
	pr.CloseWithError(errors.New("upload finished"))
	<-done // the writer no longer reads f when it is closed
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", path, err)
	}
	return &obj, nil
}

func (c *batchClient) createBatch(ctx context.Context, req openai.CreateBatchRequest, idemKey string) (*openai.BatchObject, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if idemKey != "" {
		h.Set("Idempotency-Key", idemKey)
	}
	var b openai.BatchObject
	if err := c.call(ctx, http.MethodPost, "/v1/batches", bytes.NewReader(body), h, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

func (c *batchClient) getBatch(ctx context.Context, id string) (*openai.BatchObject, error) {
	var b openai.BatchObject
	if err := c.call(ctx, http.MethodGet, "/v1/batches/"+url.PathEscape(id), nil, nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// download writes the content of file id to path, through a temporary
// file renamed into place once complete.
func (c *batchClient) download(ctx context.Context, id, path string) (int64, error) {
	resp, err := c.send(ctx, http.MethodGet, "/v1/files/"+url.PathEscape(id)+"/content", nil, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".part-*")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(tmp, resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return 0, fmt.Errorf("download %s: %w", id, err)
	}
	return n, nil
}

// downloadResults saves a batch's output and error files into dir and
// returns the paths written.
func (c *batchClient) downloadResults(ctx context.Context, b *openai.BatchObject, dir string, stdout io.Writer) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for _, f := range []struct {
		id   *string
		kind string
	}{{b.OutputFileID, "output"}, {b.ErrorFileID, "error"}} {
		if f.id == nil || *f.id == "" {
			continue
		}
		path := filepath.Join(dir, b.ID+"_"+f.kind+".jsonl")
		n, err := c.download(ctx, *f.id, path)
		if err != nil {
			return written, err
		}
		fmt.Fprintf(stdout, "%s file: %s (%d bytes)\n", f.kind, path, n)
		written = append(written, path)
	}
	return written, nil
}

func batchTerminal(status string) bool {
	switch status {
	case openai.StatusCompleted, openai.StatusFailed, openai.StatusExpired, openai.StatusCancelled:
		return true
	}
	return false
}

// printValidationErrors lists a batch's errors (per-line problems found
// when the input file was validated).
func printValidationErrors(w io.Writer, b *openai.BatchObject) {
	if b.Errors == nil || len(b.Errors.Data) == 0 {
		return
	}
	fmt.Fprintf(w, "errors (%d):\n", len(b.Errors.Data))
	for _, e := range b.Errors.Data {
		where := ""
		if e.Line != nil {
			where = fmt.Sprintf("line %d: ", *e.Line)
		}
		param := ""
		if e.Param != nil && *e.Param != "" {
			param = " [" + *e.Param + "]"
		}
		fmt.Fprintf(w, "  %s%s: %s%s\n", where, e.Code, e.Message, param)
	}
}

func writeJSONIndent(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runBatchSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var base, model, window, out, idem string
	var wait, asJSON bool
	fs := batchFlagSet("submit", stderr, &base)
	fs.StringVar(&model, "model", "", "model `name`: every line must target /v2/models/NAME/infer")
	fs.StringVar(&window, "window", "24h", "completion window: 24h, 6h or 1h")
	fs.BoolVar(&wait, "wait", false, "wait for the batch to finish, showing progress, then download its results")
	fs.StringVar(&out, "out", ".", "folder for the downloaded results (with --wait)")
	fs.StringVar(&idem, "idempotency-key", "", "Idempotency-Key of the create request")
	fs.BoolVar(&asJSON, "json", false, "print the batch object as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("usage: infergate batch submit FILE --model M [flags]")
	}
	if model == "" {
		return fmt.Errorf("batch submit: --model is required")
	}
	c, err := newBatchClient(base)
	if err != nil {
		return err
	}
	start := time.Now()
	file, err := c.upload(ctx, pos[0])
	if err != nil {
		return err
	}
	b, err := c.createBatch(ctx, openai.CreateBatchRequest{
		InputFileID: file.ID, Endpoint: "/v2/models/" + model + "/infer", CompletionWindow: window,
	}, idem)
	if err != nil {
		return err
	}
	if b.Status == openai.StatusFailed {
		if asJSON {
			_ = writeJSONIndent(stdout, b)
		} else {
			fmt.Fprintln(stdout, b.ID)
		}
		fmt.Fprintf(stderr, "batch %s failed validation of %s\n", b.ID, pos[0])
		printValidationErrors(stderr, b)
		return fmt.Errorf("batch %s failed: the input file has errors", b.ID)
	}
	if !wait {
		if asJSON {
			return writeJSONIndent(stdout, b)
		}
		fmt.Fprintln(stdout, b.ID)
		return nil
	}
	if !asJSON {
		fmt.Fprintln(stdout, b.ID)
	}
	b, err = waitBatch(ctx, c, b, stderr)
	if err != nil {
		return fmt.Errorf("batch %s: %w (it goes on on the server; see 'infergate batch status %s')", b.ID, err, b.ID)
	}
	wall := time.Since(start)
	summary := stdout
	if asJSON {
		summary = stderr
	}
	if _, err := c.downloadResults(ctx, b, out, summary); err != nil {
		return err
	}
	rc := b.RequestCounts
	done := rc.Completed + rc.Failed
	rate := 0.0
	if s := wall.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	cost := ""
	if b.Infergate != nil && b.Infergate.CostUSD != nil {
		cost = fmt.Sprintf(", cost $%.3g (busy time at the instance price)", *b.Infergate.CostUSD)
	}
	fmt.Fprintf(summary, "batch %s %s: %d/%d completed, %d failed, wall %s, %.1f items/s (measured client-side, upload included)%s\n",
		b.ID, b.Status, rc.Completed, rc.Total, rc.Failed, wall.Round(time.Millisecond), rate, cost)
	printValidationErrors(summary, b)
	if asJSON {
		if err := writeJSONIndent(stdout, b); err != nil {
			return err
		}
	}
	if b.Status != openai.StatusCompleted {
		return fmt.Errorf("batch %s ended %s", b.ID, b.Status)
	}
	return nil
}

// waitBatch polls b until it ends, drawing a progress line on w.
func waitBatch(ctx context.Context, c *batchClient, b *openai.BatchObject, w io.Writer) (*openai.BatchObject, error) {
	p := progress{w: w}
	t := time.NewTicker(batchPollInterval)
	defer t.Stop()
	for {
		p.draw(b, time.Now())
		if batchTerminal(b.Status) {
			p.finish()
			return b, nil
		}
		select {
		case <-ctx.Done():
			p.finish()
			return b, ctx.Err()
		case <-t.C:
		}
		nb, err := c.getBatch(ctx, b.ID)
		if err != nil {
			p.finish()
			return b, err
		}
		b = nb
	}
}

// progress draws a one-line progress bar. The rate is the server's
// measured items_per_sec when it sends one, else the rate this client
// measured between its first and latest observations; never a guess.
type progress struct {
	w         io.Writer
	drawn     bool
	firstAt   time.Time
	firstDone int
}

const progressWidth = 20

func (p *progress) draw(b *openai.BatchObject, now time.Time) {
	fmt.Fprint(p.w, "\r"+progressLine(b, p.rate(b, now), now))
	p.drawn = true
}

// rate returns the items/s to show, or a negative number when unknown.
func (p *progress) rate(b *openai.BatchObject, now time.Time) float64 {
	done := b.RequestCounts.Completed + b.RequestCounts.Failed
	if p.firstAt.IsZero() {
		p.firstAt, p.firstDone = now, done
	}
	if b.Infergate != nil && b.Infergate.ItemsPerSec != nil {
		return *b.Infergate.ItemsPerSec
	}
	if el := now.Sub(p.firstAt).Seconds(); el > 0 && done > p.firstDone {
		return float64(done-p.firstDone) / el
	}
	return -1
}

func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// progressLine renders "[#####.....] 52% 10400/20000 1834 items/s ETA 5s".
func progressLine(b *openai.BatchObject, rate float64, now time.Time) string {
	rc := b.RequestCounts
	done := rc.Completed + rc.Failed
	frac := 0.0
	if rc.Total > 0 {
		frac = float64(done) / float64(rc.Total)
	}
	if b.Infergate != nil && rc.Total == 0 {
		frac = b.Infergate.Progress
	}
	frac = min(max(frac, 0), 1)
	fill := int(frac * progressWidth)
	bar := strings.Repeat("#", fill) + strings.Repeat(".", progressWidth-fill)
	var s strings.Builder
	fmt.Fprintf(&s, "[%s] %3d%% %d/%d", bar, int(frac*100), done, rc.Total)
	if rc.Failed > 0 {
		fmt.Fprintf(&s, " (%d failed)", rc.Failed)
	}
	if rate >= 0 {
		fmt.Fprintf(&s, " %.0f items/s", rate)
	} else {
		s.WriteString(" - items/s")
	}
	switch {
	case batchTerminal(b.Status):
		s.WriteString(" " + b.Status)
	case b.Infergate != nil && b.Infergate.EstimatedCompletionAt != nil:
		eta := max(time.Unix(*b.Infergate.EstimatedCompletionAt, 0).Sub(now), 0)
		fmt.Fprintf(&s, " ETA %s", eta.Round(time.Second))
	case rate > 0 && rc.Total > done:
		eta := time.Duration(float64(rc.Total-done) / rate * float64(time.Second))
		fmt.Fprintf(&s, " ETA %s", eta.Round(time.Second))
	default:
		s.WriteString(" ETA ?")
	}
	if b.Status == openai.StatusCancelling || b.Status == openai.StatusFinalizing || b.Status == openai.StatusValidating {
		s.WriteString(" " + b.Status)
	}
	// Pad so that a shorter line fully covers the previous one.
	return fmt.Sprintf("%-72s", s.String())
}

func runBatchList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var base string
	var limit int
	var asJSON bool
	fs := batchFlagSet("list", stderr, &base)
	fs.IntVar(&limit, "limit", 20, "number of batches to list (1-100)")
	fs.BoolVar(&asJSON, "json", false, "print the list response as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("usage: infergate batch list [--limit N] [--json]")
	}
	c, err := newBatchClient(base)
	if err != nil {
		return err
	}
	path := "/v1/batches"
	if limit > 0 {
		path += fmt.Sprintf("?limit=%d", limit)
	}
	var l openai.ListResponse[openai.BatchObject]
	if err := c.call(ctx, http.MethodGet, path, nil, nil, &l); err != nil {
		return err
	}
	if asJSON {
		return writeJSONIndent(stdout, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tENDPOINT\tCOMPLETED\tFAILED\tTOTAL\tCREATED")
	for _, b := range l.Data {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", b.ID, b.Status, b.Endpoint,
			b.RequestCounts.Completed, b.RequestCounts.Failed, b.RequestCounts.Total,
			time.Unix(b.CreatedAt, 0).Format(time.DateTime))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.HasMore {
		fmt.Fprintln(stdout, "(more batches: raise --limit)")
	}
	return nil
}

func runBatchStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var base string
	var asJSON bool
	fs := batchFlagSet("status", stderr, &base)
	fs.BoolVar(&asJSON, "json", false, "print the batch object as JSON")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	c, err := newBatchClient(base)
	if err != nil {
		return err
	}
	b, err := c.getBatch(ctx, id)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSONIndent(stdout, b)
	}
	rc := b.RequestCounts
	fmt.Fprintf(stdout, "batch     %s\nstatus    %s\nendpoint  %s\ncreated   %s\n", b.ID, b.Status, b.Endpoint,
		time.Unix(b.CreatedAt, 0).Format(time.RFC3339))
	fmt.Fprintf(stdout, "requests  %d completed, %d failed, %d total\n", rc.Completed, rc.Failed, rc.Total)
	if x := b.Infergate; x != nil {
		fmt.Fprintf(stdout, "progress  %.1f%%\n", x.Progress*100)
		if x.ItemsPerSec != nil {
			fmt.Fprintf(stdout, "rate      %.1f items/s (server-measured)\n", *x.ItemsPerSec)
		}
		if x.EstimatedCompletionAt != nil {
			fmt.Fprintf(stdout, "eta       %s\n", time.Unix(*x.EstimatedCompletionAt, 0).Format(time.RFC3339))
		}
		if x.CostUSD != nil {
			fmt.Fprintf(stdout, "cost      $%.6f\n", *x.CostUSD)
		}
	}
	if b.OutputFileID != nil {
		fmt.Fprintf(stdout, "output    %s\n", *b.OutputFileID)
	}
	if b.ErrorFileID != nil {
		fmt.Fprintf(stdout, "errors    %s\n", *b.ErrorFileID)
	}
	printValidationErrors(stdout, b)
	return nil
}

func runBatchCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var base string
	fs := batchFlagSet("cancel", stderr, &base)
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	c, err := newBatchClient(base)
	if err != nil {
		return err
	}
	var b openai.BatchObject
	if err := c.call(ctx, http.MethodPost, "/v1/batches/"+url.PathEscape(id)+"/cancel", nil, nil, &b); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "batch %s: %s\n", b.ID, b.Status)
	return nil
}

func runBatchResults(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var base, out string
	fs := batchFlagSet("results", stderr, &base)
	fs.StringVar(&out, "out", ".", "folder for the downloaded files")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	c, err := newBatchClient(base)
	if err != nil {
		return err
	}
	b, err := c.getBatch(ctx, id)
	if err != nil {
		return err
	}
	written, err := c.downloadResults(ctx, b, out, stdout)
	if err != nil {
		return err
	}
	if len(written) == 0 {
		if !batchTerminal(b.Status) {
			return fmt.Errorf("batch %s is %s: no results yet", b.ID, b.Status)
		}
		printValidationErrors(stderr, b)
		return fmt.Errorf("batch %s ended %s with no output or error file", b.ID, b.Status)
	}
	return nil
}
