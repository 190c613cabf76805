package jobs

import (
	"context"
	"io"
	"iter"
	"time"
)

// List limits. A limit of zero or less means DefaultListLimit; a larger
// limit than MaxListLimit is cut to it.
const (
	DefaultListLimit = 20
	MaxListLimit     = 10000
)

// ClampLimit applies DefaultListLimit and MaxListLimit to a requested list
// limit. Implementations use it so that they agree.
func ClampLimit(limit int) int {
	if limit <= 0 {
		return DefaultListLimit
	}
	return min(limit, MaxListLimit)
}

// Store is the durable state of the Batch API: files and their content,
// batches, and the items of each batch with their leases and results.
//
// Errors are *infergate.Error values with the codes documented on each
// method (ENotFound, EConflict, EInvalid); anything else (a database
// failure, a closed store) is an internal error, and context errors are
// returned as they are. Methods are safe for concurrent use, and several
// Store values (processes, replicas) may share one database where the
// implementation allows it: the guarantees below hold across all of them.
//
// Owner scoping: methods that take an owner and an ID treat a record of
// another owner as missing (ENotFound). Methods the runner uses
// (UpdateBatchStatus, FinishBatch, the item methods, ActiveBatches) take no
// owner. In the item methods, "owner" is instead the lease owner: the
// runner instance (replica incarnation) that holds a lease; it must be
// unique per process start.
//
// Times: the store takes "now" from the clock it was opened with.
type Store interface {
	// CreateFile stores a new file and its content, read from content
	// until EOF without holding it all in memory. It sets f.ID (unless
	// already set), f.Bytes and f.CreatedAt. The file becomes visible to
	// the other methods only once all its content is stored; if content
	// fails or ctx ends, nothing is left behind and the error is returned.
	CreateFile(ctx context.Context, f *File, content io.Reader) error

	// GetFile returns the file's metadata. ENotFound if there is no such
	// file of owner.
	GetFile(ctx context.Context, owner, id string) (*File, error)

	// ListFiles returns owner's files newest first, starting after the file
	// with ID after (from the start when after is ""), at most limit of
	// them (see ClampLimit), and whether more follow. EInvalid if after
	// names no file of owner.
	ListFiles(ctx context.Context, owner, after string, limit int) (files []*File, more bool, err error)

	// OpenFileContent opens the file's content for reading. The reader
	// fetches the content piece by piece with ctx as it is read; the
	// caller must close it. ENotFound if there is no such file of owner;
	// reading a file deleted meanwhile fails.
	OpenFileContent(ctx context.Context, owner, id string) (io.ReadCloser, error)

	// DeleteFile deletes the file and its content. ENotFound if there is
	// no such file of owner; EConflict if a batch that is not terminal
	// uses it as its input.
	DeleteFile(ctx context.Context, owner, id string) error

	// CreateBatch creates a batch and its items in one transaction, reading
	// items from the sequence as it goes (in chunks, never all at once). It
	// numbers the items 0, 1, 2, ... in order (Item.Seq and the item's
	// other fields but CustomID and Body are ignored), and sets b.ID
	// (unless already set), b.CreatedAt, b.ExpiresAt (CreatedAt+Window),
	// b.Total and the timestamp of b.Status. b.Status may be "" (meaning
	// validating), validating, in_progress or failed; counters and file IDs
	// start empty.
	//
	// Idempotency: when b.IdempotencyKey is not empty and owner b.Owner
	// already has a batch with that key, CreateBatch reads no item and
	// either, if that batch's RequestHash equals b.RequestHash, copies it
	// into *b and returns existed=true, or returns EConflict. Keys of
	// different owners are independent.
	//
	// Errors: EInvalid for a missing InputFileID or Endpoint, a bad status,
	// an empty or duplicate CustomID; ENotFound if b.InputFileID names no
	// file of b.Owner; an error yielded by items is returned as it is. On
	// any error nothing is created. items may be nil (no items). The
	// sequence must not call the store's write methods (the transaction
	// may hold the store's only writer).
	CreateBatch(ctx context.Context, b *Batch, items iter.Seq2[*Item, error]) (existed bool, err error)

	// GetBatch returns the batch. ENotFound if there is no such batch of
	// owner.
	GetBatch(ctx context.Context, owner, id string) (*Batch, error)

	// ListBatches returns owner's batches newest first, starting after the
	// batch with ID after, at most limit of them (see ClampLimit), and
	// whether more follow. EInvalid if after names no batch of owner.
	ListBatches(ctx context.Context, owner, after string, limit int) (batches []*Batch, more bool, err error)

	// ActiveBatches returns every batch, of every owner, whose status is
	// not terminal (validating, in_progress, finalizing, cancelling),
	// oldest first: the batches a runner resumes after a restart.
	ActiveBatches(ctx context.Context) ([]*Batch, error)

	// UpdateBatchStatus moves batch id from status from to status to and
	// records at (the store's clock when zero) as the time it entered to.
	// It is a compare-and-set: EConflict if the batch's status is not
	// from. EInvalid if CanTransition(from, to) is false; ENotFound if
	// there is no such batch.
	UpdateBatchStatus(ctx context.Context, id string, from, to Status, at time.Time) error

	// FinishBatch is UpdateBatchStatus into a terminal status (EInvalid
	// otherwise) that also records, in the same transaction, the outcome:
	// the output and error file IDs (each set when not empty) and
	// batch-level errors (appended).
	FinishBatch(ctx context.Context, id string, from, to Status, at time.Time, out Outcome) error

	// LeaseItems leases up to n items of the batch to owner, in Seq order:
	// items that are pending and due (NextAttemptAt <= now), and items
	// whose lease has expired (LeaseUntil <= now), whoever held it. Each
	// is marked leased by owner until now+leaseFor and its Attempts is
	// incremented; the items are returned with their bodies. The selection
	// and the marking are atomic: no item is leased to two owners at once.
	// It returns no items (and no error) when none is leasable.
	// EConflict if the batch is not in_progress; ENotFound if there is no
	// such batch; EInvalid for n <= 0, leaseFor <= 0 or an empty owner.
	LeaseItems(ctx context.Context, batchID, owner string, n int, leaseFor time.Duration) ([]*Item, error)

	// CompleteItems records the outcomes of items leased by owner, in one
	// transaction: done or failed (terminal, with status code, result and
	// error), or pending again (a retry, due at NextAttemptAt, with error
	// kept as the last error). An outcome is applied only if the item is
	// still leased by owner (even if the lease has expired, as long as
	// nobody has leased it since); the others are ignored and returned as
	// stale. The batches' Completed and Failed counters are bumped in the
	// same transaction. EInvalid for a bad state in results; ENotFound if
	// a result names no batch.
	CompleteItems(ctx context.Context, owner string, results []ItemResult) (stale []ItemKey, err error)

	// RetryItem puts one item leased by owner back to pending, due at
	// nextAttemptAt, with errMsg as its last error; the attempt stays
	// counted. EConflict if the item is not leased by owner; ENotFound if
	// there is no such batch. (CompleteItems with ItemPending does the same
	// for many items at once.)
	RetryItem(ctx context.Context, owner, batchID string, seq int64, nextAttemptAt time.Time, errMsg string) error

	// ReleaseLeases gives back every lease owner holds, in every batch:
	// the items become pending and due at once, and the attempt is not
	// counted. For a graceful shutdown, after in-flight work is recorded.
	// It returns how many items it released.
	ReleaseLeases(ctx context.Context, owner string) (int, error)

	// CancelPending fails the batch's items that have not started: pending
	// ones (due or not) and leased ones whose lease has expired. Their
	// Error is reason (ReasonCancelled or ReasonExpired) so that they
	// appear in the error file; the batch's Failed counter is bumped in
	// the same transaction. Items under a live lease are left to their
	// owner. It returns how many items it failed. ENotFound if there is no
	// such batch.
	CancelPending(ctx context.Context, batchID, reason string) (int, error)

	// CountItems counts the batch's items by state. ENotFound if there is
	// no such batch.
	CountItems(ctx context.Context, batchID string) (ItemCounts, error)

	// ItemResults calls fn for each of the batch's items in state, in Seq
	// order, reading them a page at a time; it stops at and returns fn's
	// first error. The items carry everything but Body (nil). fn may call
	// the store. ENotFound if there is no such batch; EInvalid for a bad
	// state.
	ItemResults(ctx context.Context, batchID string, state ItemState, fn func(*Item) error) error

	// Close releases the store's resources. Calling it again is a no-op;
	// the other methods fail after it.
	Close() error
}

// Outcome is what FinishBatch records with a terminal status.
type Outcome struct {
	OutputFileID string
	ErrorFileID  string
	Errors       []LineError
}
