package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// File is an uploaded or generated file. Its content is kept by the store
// and read and written as a stream (see Store.CreateFile and
// Store.OpenFileContent); a File value never holds it.
type File struct {
	// ID is "file-" followed by random characters (see NewFileID).
	ID string
	// Purpose is the OpenAI purpose: "batch" for batch input, and
	// "batch_output" for the output and error files the runner writes.
	// The store does not interpret it.
	Purpose  string
	Filename string
	// Bytes is the content length, set by the store as it stores the
	// content.
	Bytes     int64
	CreatedAt time.Time
	// Owner is the tenant the file belongs to. Every read and delete is
	// scoped to it: another owner gets ENotFound.
	Owner string
}

// Purposes the server uses.
const (
	PurposeBatch       = "batch"
	PurposeBatchOutput = "batch_output"
)

// Status is a batch's status, spelled as in the OpenAI Batch API.
type Status string

// The batch statuses.
const (
	StatusValidating Status = "validating"
	StatusFailed     Status = "failed"
	StatusInProgress Status = "in_progress"
	StatusFinalizing Status = "finalizing"
	StatusCompleted  Status = "completed"
	StatusExpired    Status = "expired"
	StatusCancelling Status = "cancelling"
	StatusCancelled  Status = "cancelled"
)

// Statuses lists every status.
var Statuses = []Status{
	StatusValidating, StatusFailed, StatusInProgress, StatusFinalizing,
	StatusCompleted, StatusExpired, StatusCancelling, StatusCancelled,
}

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Terminal reports whether s is final: failed, completed, expired or
// cancelled. A terminal batch never changes status again and has no items
// that can run.
func (s Status) Terminal() bool {
	switch s {
	case StatusFailed, StatusCompleted, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// Active reports whether s is a status the runner must drive: any status
// that is not terminal.
func (s Status) Active() bool { return s.Valid() && !s.Terminal() }

// transitions is the batch state machine; see the package documentation.
var transitions = map[Status][]Status{
	StatusValidating: {StatusInProgress, StatusFailed, StatusCancelling},
	StatusInProgress: {StatusFinalizing, StatusCancelling, StatusExpired, StatusFailed},
	StatusFinalizing: {StatusCompleted, StatusExpired, StatusFailed},
	StatusCancelling: {StatusCancelled},
}

// CanTransition reports whether a batch may move from one status to
// another. Staying in the same status is not a transition.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// LineError is a batch-level error, as in the "errors.data" list of an
// OpenAI batch object: typically a line of the input file that failed
// validation.
type LineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	// Line is the 1-based line of the input file, or 0 when the error
	// concerns no particular line.
	Line int `json:"line,omitempty"`
}

// Batch is a batch job.
//
// Timestamps are time.Time values; the zero time means "not set" (the
// OpenAI object's null). The store sets CreatedAt (and ExpiresAt, from
// Window) when it creates the batch, and the timestamp that belongs to a
// status when the batch enters it.
type Batch struct {
	// ID is "batch_" followed by random characters (see NewBatchID).
	ID string
	// Owner is the tenant the batch belongs to; reads are scoped to it.
	Owner       string
	InputFileID string
	// Endpoint is the endpoint every item is sent to, e.g.
	// "/v1/chat/completions"; the store does not interpret it.
	Endpoint string
	// CompletionWindow is the window as the client wrote it ("24h");
	// Window is its parsed value.
	CompletionWindow string
	Window           time.Duration
	Status           Status
	Metadata         map[string]string
	// IdempotencyKey, when not empty, makes creation idempotent per owner:
	// see Store.CreateBatch. RequestHash is a digest of the creation
	// request computed by the caller; the store only compares it.
	IdempotencyKey string
	RequestHash    string
	// Total is the number of items. Completed and Failed count the items
	// that ended done and failed; they are updated in the same transaction
	// as the items, so they always match the items' states.
	Total     int
	Completed int
	Failed    int
	// CostUSD is the cost of the work done for the batch so far: the sum
	// of the CostUSD of every item outcome recorded (retried attempts
	// included), bumped in the same transaction as the items.
	CostUSD float64
	// OutputFileID and ErrorFileID are set when the batch reaches a
	// terminal status (see Store.FinishBatch).
	OutputFileID string
	ErrorFileID  string

	CreatedAt    time.Time
	InProgressAt time.Time
	FinalizingAt time.Time
	CompletedAt  time.Time
	FailedAt     time.Time
	ExpiredAt    time.Time
	CancellingAt time.Time
	CancelledAt  time.Time
	// ExpiresAt is CreatedAt+Window (zero when Window is zero).
	ExpiresAt time.Time

	// Errors are batch-level errors, e.g. validation failures.
	Errors []LineError
}

// StatusTime returns a pointer to the timestamp field that records when b
// entered s, or nil for an unknown status. StatusValidating maps to
// CreatedAt.
func (b *Batch) StatusTime(s Status) *time.Time {
	switch s {
	case StatusValidating:
		return &b.CreatedAt
	case StatusInProgress:
		return &b.InProgressAt
	case StatusFinalizing:
		return &b.FinalizingAt
	case StatusCompleted:
		return &b.CompletedAt
	case StatusFailed:
		return &b.FailedAt
	case StatusExpired:
		return &b.ExpiredAt
	case StatusCancelling:
		return &b.CancellingAt
	case StatusCancelled:
		return &b.CancelledAt
	}
	return nil
}

// ItemState is the state of one item (one line of the input file).
type ItemState string

// The item states. Pending and leased are runnable states; done and failed
// are terminal.
const (
	ItemPending ItemState = "pending"
	ItemLeased  ItemState = "leased"
	ItemDone    ItemState = "done"
	ItemFailed  ItemState = "failed"
)

// Valid reports whether s is one of the item states.
func (s ItemState) Valid() bool {
	switch s {
	case ItemPending, ItemLeased, ItemDone, ItemFailed:
		return true
	}
	return false
}

// Terminal reports whether s is done or failed.
func (s ItemState) Terminal() bool { return s == ItemDone || s == ItemFailed }

// Item is one request of a batch.
type Item struct {
	BatchID string
	// Seq numbers the items of a batch 0, 1, 2, ... in input order; the
	// store assigns it.
	Seq      int64
	CustomID string
	// Body is the request body (JSON) to send to the batch's endpoint.
	Body  []byte
	State ItemState
	// Attempts counts the leases taken on the item (a lease given back by
	// Store.ReleaseLeases does not count).
	Attempts int
	// LeaseOwner is the owner of the current or last lease; LeaseUntil is
	// when the current lease expires.
	LeaseOwner string
	LeaseUntil time.Time
	// NextAttemptAt is when a pending item becomes leasable; zero means
	// now.
	NextAttemptAt time.Time
	// Result is the response body (JSON) and StatusCode its HTTP status,
	// for a done item and for a failed item that got a response.
	Result     []byte
	StatusCode int
	// Error is the failure message of a failed item, or the last retry's
	// error of a pending one.
	Error string
}

// Error messages the store writes into items it fails on the runner's
// behalf (Store.CancelPending). They are the OpenAI error codes of such
// items.
const (
	ReasonCancelled = "batch_cancelled"
	ReasonExpired   = "batch_expired"
)

// ItemResult is the outcome of one leased item, reported by
// Store.CompleteItems.
type ItemResult struct {
	BatchID string
	Seq     int64
	// State is ItemDone or ItemFailed to finish the item, or ItemPending
	// to put it back for another attempt at NextAttemptAt.
	State         ItemState
	StatusCode    int
	Result        []byte
	Error         string
	NextAttemptAt time.Time
	// CostUSD is what running this attempt cost (its share of the busy
	// time of the batches that ran it, at the instance price); added to
	// the batch's CostUSD when the outcome is applied.
	CostUSD float64
}

// ItemKey names one item.
type ItemKey struct {
	BatchID string
	Seq     int64
}

// ItemCounts counts a batch's items by state.
type ItemCounts struct {
	Pending, Leased, Done, Failed int
}

// Total is the number of items.
func (c ItemCounts) Total() int { return c.Pending + c.Leased + c.Done + c.Failed }

// Runnable is the number of items not yet done or failed.
func (c ItemCounts) Runnable() int { return c.Pending + c.Leased }

// NewFileID returns a new file ID: "file-" and 32 random hex digits
// (128 bits from crypto/rand), the format internal/openai uses too.
func NewFileID() string { return newID("file-") }

// NewBatchID returns a new batch ID: "batch_" and 32 random hex digits.
func NewBatchID() string { return newID("batch_") }

func newID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return prefix + hex.EncodeToString(b[:])
}
