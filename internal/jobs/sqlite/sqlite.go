// Package sqlite is the single-node jobs.Store: one SQLite database file,
// through database/sql and the pure-Go modernc.org/sqlite driver.
//
// # Durability
//
// The database runs in WAL mode with synchronous=FULL: every commit is
// fsynced to the write-ahead log before it returns. WAL with
// synchronous=NORMAL would already survive kill -9 (a committed
// transaction is in the OS's page cache), but could lose the last commits
// on a power loss or kernel crash; a job store whose counters and leases
// must match the output files pays for FULL. Foreign keys are on.
//
// # Concurrency
//
// All writes go through one connection (a pool of one), and every write
// transaction starts with BEGIN IMMEDIATE, which takes SQLite's database
// write lock at once. So write transactions are serialized: within this
// process by the pool, across processes or other Store values on the same
// file by the lock (waiting up to busy_timeout). A read-then-write inside
// one transaction, such as LeaseItems' select-and-mark, therefore cannot
// interleave with another writer, and no item is leased twice. Reads that
// need no transaction (Get, List, counts, results, file content) use a
// separate pool of read-only connections, which WAL lets run alongside the
// writer.
//
// Long transactions hold the write lock: CreateBatch holds it while it
// reads the whole item sequence, so the sequence should be fast (parsing
// an already stored file, not a network upload). File uploads, in
// contrast, store each 1 MiB chunk in its own transaction, so a slow
// client does not block the writer.
//
// A database is meant to be used by one process (one replica). Several
// Store values on one file work, and the tests use that, but the file must
// be on a local file system.
package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

const (
	// chunkSize is the size of a stored file content row.
	chunkSize = 1 << 20
	// itemChunk is how many items CreateBatch inserts per statement, and
	// itemChunkBytes the most body bytes it buffers before inserting.
	itemChunk      = 128
	itemChunkBytes = 4 << 20
	// resultPage is how many items ItemResults reads per query.
	resultPage = 256
	// staleUpload is how long an upload may go without storing a chunk
	// before its partial content is removed.
	staleUpload = time.Hour
	// busyTimeout is how long a connection waits for another's lock.
	busyTimeoutMS = 10000
	readConns     = 4
)

// Store is a jobs.Store on one SQLite database.
type Store struct {
	w, r *sql.DB
	clk  clock.Clock

	closeOnce sync.Once
	closeErr  error
}

var _ jobs.Store = (*Store)(nil)

// Open opens the database at path, creating it if needed, and brings its
// schema to the current version. clk is the store's only source of "now".
func Open(path string, clk clock.Clock) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, ":memory:") {
		return nil, infergate.Errorf(infergate.EInvalid, "sqlite job store: bad database path %q", path)
	}
	if clk == nil {
		clk = clock.Real{}
	}
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite job store: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	ctx := context.Background()
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite job store: open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite job store: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite job store: open %s: %w", path, err)
	}
	s := &Store{w: w, r: r, clk: clk}
	if err := s.removeStaleUploads(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		q.Set("_txlock", "immediate")
	}
	return path + "?" + q.Encode()
}

// Close closes the database. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// write runs fn in a write transaction (BEGIN IMMEDIATE on the writer).
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.dbErr(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return s.dbErr(err)
	}
	return s.dbErr(tx.Commit())
}

// dbErr wraps a database error; application errors and context errors
// pass through. A full disk is EUnavailable: the failed transaction is
// rolled back, and the same write can succeed once space is freed.
func (s *Store) dbErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *infergate.Error
	if errors.As(err, &ae) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if isDiskFull(err) {
		return &infergate.Error{Code: infergate.EUnavailable, Message: "job store: disk is full", Err: err}
	}
	return fmt.Errorf("sqlite job store: %w", err)
}

// isDiskFull reports whether err is SQLite's answer to ENOSPC: SQLITE_FULL
// from a write to the database or its WAL, or SQLITE_IOERR_SHMSIZE when
// the WAL index (-shm) cannot grow.
func isDiskFull(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code()&0xff == sqlite3.SQLITE_FULL || se.Code() == sqlite3.SQLITE_IOERR_SHMSIZE
}

func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// ts and tm convert times to and from the stored form: Unix nanoseconds,
// 0 for the zero time.
func ts(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func tm(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// ---- Files ----

func (s *Store) removeStaleUploads(ctx context.Context) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM files WHERE ready = 0 AND updated_at < ?`,
			ts(s.clk.Now().Add(-staleUpload)))
		return err
	})
}

// CreateFile implements jobs.Store. The content is stored in 1 MiB rows,
// each in its own transaction; the file row is marked ready in a last one.
func (s *Store) CreateFile(ctx context.Context, f *jobs.File, content io.Reader) (err error) {
	id := f.ID
	if id == "" {
		id = jobs.NewFileID()
	}
	now := s.clk.Now()
	if err := s.removeStaleUploads(ctx); err != nil {
		return err
	}
	var pk int64
	err = s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO files (id, owner, purpose, filename, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING pk`,
			id, f.Owner, f.Purpose, f.Filename, ts(now), ts(now)).Scan(&pk)
		if isUniqueViolation(err) {
			return infergate.Errorf(infergate.EConflict, "file %s already exists", id)
		}
		return err
	})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Leave nothing behind, even if ctx has ended.
			s.write(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
				_, err := tx.Exec(`DELETE FROM files WHERE pk = ?`, pk)
				return err
			})
		}
	}()
	buf := make([]byte, chunkSize)
	var size int64
	for idx := 0; ; idx++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, eof, rerr := jobs.ReadChunk(content, buf)
		if n > 0 {
			err := s.write(ctx, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO file_chunks (file_pk, idx, data) VALUES (?, ?, ?)`,
					pk, idx, buf[:n]); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, `UPDATE files SET updated_at = ? WHERE pk = ?`, ts(s.clk.Now()), pk)
				return err
			})
			if err != nil {
				return err
			}
			size += int64(n)
		}
		if rerr != nil {
			return rerr
		}
		if eof {
			break
		}
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE files SET bytes = ?, ready = 1 WHERE pk = ?`, size, pk)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("file %s vanished during its upload", id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	f.ID, f.Bytes, f.CreatedAt = id, size, tm(ts(now))
	return nil
}

const fileCols = `id, owner, purpose, filename, bytes, created_at`

func scanFile(sc interface{ Scan(...any) error }) (*jobs.File, error) {
	var f jobs.File
	var created int64
	if err := sc.Scan(&f.ID, &f.Owner, &f.Purpose, &f.Filename, &f.Bytes, &created); err != nil {
		return nil, err
	}
	f.CreatedAt = tm(created)
	return &f, nil
}

// GetFile implements jobs.Store.
func (s *Store) GetFile(ctx context.Context, owner, id string) (*jobs.File, error) {
	f, err := scanFile(s.r.QueryRowContext(ctx,
		`SELECT `+fileCols+` FROM files WHERE id = ? AND owner = ? AND ready = 1`, id, owner))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, infergate.Errorf(infergate.ENotFound, "no such file: %s", id)
	}
	return f, s.dbErr(err)
}

// ListFiles implements jobs.Store.
func (s *Store) ListFiles(ctx context.Context, owner, after string, limit int) ([]*jobs.File, bool, error) {
	limit = jobs.ClampLimit(limit)
	cursor := int64(1<<63 - 1)
	if after != "" {
		err := s.r.QueryRowContext(ctx, `SELECT pk FROM files WHERE id = ? AND owner = ? AND ready = 1`, after, owner).Scan(&cursor)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, infergate.Errorf(infergate.EInvalid, "after: no such file: %s", after)
		}
		if err != nil {
			return nil, false, s.dbErr(err)
		}
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+fileCols+` FROM files
		WHERE owner = ? AND ready = 1 AND pk < ? ORDER BY pk DESC LIMIT ?`, owner, cursor, limit+1)
	if err != nil {
		return nil, false, s.dbErr(err)
	}
	defer rows.Close()
	var files []*jobs.File
	for rows.Next() {
		f, err := scanFile(rows)
		if err != nil {
			return nil, false, s.dbErr(err)
		}
		files = append(files, f)
	}
	if err := rows.Err(); err != nil {
		return nil, false, s.dbErr(err)
	}
	more := len(files) > limit
	if more {
		files = files[:limit]
	}
	return files, more, nil
}

// OpenFileContent implements jobs.Store. The reader fetches one 1 MiB row
// at a time from the read pool.
func (s *Store) OpenFileContent(ctx context.Context, owner, id string) (io.ReadCloser, error) {
	var pk, size int64
	err := s.r.QueryRowContext(ctx, `SELECT pk, bytes FROM files WHERE id = ? AND owner = ? AND ready = 1`, id, owner).Scan(&pk, &size)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, infergate.Errorf(infergate.ENotFound, "no such file: %s", id)
	}
	if err != nil {
		return nil, s.dbErr(err)
	}
	return &contentReader{s: s, ctx: ctx, id: id, pk: pk, size: size}, nil
}

type contentReader struct {
	s      *Store
	ctx    context.Context
	id     string
	pk     int64
	size   int64 // total bytes
	read   int64 // bytes fetched so far
	idx    int   // next chunk
	buf    []byte
	closed bool
}

func (c *contentReader) Read(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("read of closed file content")
	}
	if len(c.buf) == 0 {
		if c.read >= c.size {
			return 0, io.EOF
		}
		var data []byte
		err := c.s.r.QueryRowContext(c.ctx, `SELECT data FROM file_chunks WHERE file_pk = ? AND idx = ?`, c.pk, c.idx).Scan(&data)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && len(data) == 0) {
			return 0, infergate.Errorf(infergate.ENotFound, "file %s was deleted while being read", c.id)
		}
		if err != nil {
			return 0, c.s.dbErr(err)
		}
		c.idx++
		c.read += int64(len(data))
		c.buf = data
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *contentReader) Close() error {
	c.closed = true
	c.buf = nil
	return nil
}

// DeleteFile implements jobs.Store.
func (s *Store) DeleteFile(ctx context.Context, owner, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var pk int64
		err := tx.QueryRowContext(ctx, `SELECT pk FROM files WHERE id = ? AND owner = ? AND ready = 1`, id, owner).Scan(&pk)
		if errors.Is(err, sql.ErrNoRows) {
			return infergate.Errorf(infergate.ENotFound, "no such file: %s", id)
		}
		if err != nil {
			return err
		}
		var batchID string
		err = tx.QueryRowContext(ctx, `SELECT id FROM batches WHERE input_file_id = ? AND status IN `+activeStatuses+` LIMIT 1`, id).Scan(&batchID)
		if err == nil {
			return infergate.Errorf(infergate.EConflict, "file %s is the input of batch %s, which is still active", id, batchID)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM files WHERE pk = ?`, pk)
		return err
	})
}

// ---- Batches ----

const activeStatuses = `('validating', 'in_progress', 'finalizing', 'cancelling')`

const batchCols = `id, owner, input_file_id, endpoint, completion_window, window_ns, status, metadata,
	idempotency_key, request_hash, total, completed, failed, cost_usd, output_file_id, error_file_id, errors,
	created_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at,
	cancelled_at, expires_at`

// statusCol is the column that records when a batch entered a status.
var statusCol = map[jobs.Status]string{
	jobs.StatusValidating: "created_at",
	jobs.StatusInProgress: "in_progress_at",
	jobs.StatusFinalizing: "finalizing_at",
	jobs.StatusCompleted:  "completed_at",
	jobs.StatusFailed:     "failed_at",
	jobs.StatusExpired:    "expired_at",
	jobs.StatusCancelling: "cancelling_at",
	jobs.StatusCancelled:  "cancelled_at",
}

func scanBatch(sc interface{ Scan(...any) error }) (*jobs.Batch, error) {
	var b jobs.Batch
	var window int64
	var status, metadata, errs string
	var t [9]int64
	err := sc.Scan(&b.ID, &b.Owner, &b.InputFileID, &b.Endpoint, &b.CompletionWindow, &window, &status, &metadata,
		&b.IdempotencyKey, &b.RequestHash, &b.Total, &b.Completed, &b.Failed, &b.CostUSD, &b.OutputFileID, &b.ErrorFileID, &errs,
		&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8])
	if err != nil {
		return nil, err
	}
	b.Window = time.Duration(window)
	b.Status = jobs.Status(status)
	if metadata != "" {
		if err := json.Unmarshal([]byte(metadata), &b.Metadata); err != nil {
			return nil, fmt.Errorf("batch %s: metadata: %w", b.ID, err)
		}
	}
	if errs != "" {
		if err := json.Unmarshal([]byte(errs), &b.Errors); err != nil {
			return nil, fmt.Errorf("batch %s: errors: %w", b.ID, err)
		}
	}
	b.CreatedAt, b.InProgressAt, b.FinalizingAt = tm(t[0]), tm(t[1]), tm(t[2])
	b.CompletedAt, b.FailedAt, b.ExpiredAt = tm(t[3]), tm(t[4]), tm(t[5])
	b.CancellingAt, b.CancelledAt, b.ExpiresAt = tm(t[6]), tm(t[7]), tm(t[8])
	return &b, nil
}

func marshalOrEmpty[T any](v []T) (string, error) {
	if len(v) == 0 {
		return "", nil
	}
	p, err := json.Marshal(v)
	return string(p), err
}

// CreateBatch implements jobs.Store.
func (s *Store) CreateBatch(ctx context.Context, b *jobs.Batch, items iter.Seq2[*jobs.Item, error]) (bool, error) {
	status, err := jobs.CheckNewBatch(b)
	if err != nil {
		return false, err
	}
	var metadata string
	if len(b.Metadata) > 0 {
		p, err := json.Marshal(b.Metadata)
		if err != nil {
			return false, err
		}
		metadata = string(p)
	}
	errs, err := marshalOrEmpty(b.Errors)
	if err != nil {
		return false, err
	}
	id := b.ID
	if id == "" {
		id = jobs.NewBatchID()
	}
	now := tm(ts(s.clk.Now()))
	var expires time.Time
	if b.Window > 0 {
		expires = now.Add(b.Window)
	}

	var existing *jobs.Batch
	var total int
	err = s.write(ctx, func(tx *sql.Tx) error {
		if b.IdempotencyKey != "" {
			e, err := scanBatch(tx.QueryRowContext(ctx, `SELECT `+batchCols+` FROM batches WHERE owner = ? AND idempotency_key = ?`,
				b.Owner, b.IdempotencyKey))
			switch {
			case err == nil:
				if e.RequestHash != b.RequestHash {
					return infergate.Errorf(infergate.EConflict,
						"idempotency key %q was already used for a different request (batch %s)", b.IdempotencyKey, e.ID)
				}
				existing = e
				return nil
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM files WHERE id = ? AND owner = ? AND ready = 1`, b.InputFileID, b.Owner).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return infergate.Errorf(infergate.ENotFound, "no such file: %s", b.InputFileID)
		}
		if err != nil {
			return err
		}
		var pk int64
		err = tx.QueryRowContext(ctx, `INSERT INTO batches (id, owner, input_file_id, endpoint, completion_window, window_ns,
				status, metadata, idempotency_key, request_hash, errors, created_at, expires_at, `+statusCol[status]+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk`,
			id, b.Owner, b.InputFileID, b.Endpoint, b.CompletionWindow, int64(b.Window),
			string(status), metadata, b.IdempotencyKey, b.RequestHash, errs, ts(now), ts(expires), ts(now)).Scan(&pk)
		if isUniqueViolation(err) {
			return infergate.Errorf(infergate.EConflict, "batch %s already exists", id)
		}
		if err != nil {
			return err
		}
		total, err = insertItems(ctx, tx, pk, items)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE batches SET total = ? WHERE pk = ?`, total, pk)
		return err
	})
	if err != nil {
		return false, err
	}
	if existing != nil {
		*b = *existing
		return true, nil
	}
	b.ID, b.Status, b.CreatedAt, b.ExpiresAt, b.Total = id, status, now, expires, total
	b.InProgressAt, b.FinalizingAt, b.CompletedAt, b.FailedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	b.ExpiredAt, b.CancellingAt, b.CancelledAt = time.Time{}, time.Time{}, time.Time{}
	*b.StatusTime(status) = now
	b.Completed, b.Failed, b.CostUSD, b.OutputFileID, b.ErrorFileID = 0, 0, 0, "", ""
	return false, nil
}

// insertItems inserts the items in multi-row statements of up to
// itemChunk rows and returns how many there were.
func insertItems(ctx context.Context, tx *sql.Tx, batchPK int64, items iter.Seq2[*jobs.Item, error]) (int, error) {
	if items == nil {
		return 0, nil
	}
	const cols = 3
	full, err := tx.PrepareContext(ctx, insertItemsSQL(itemChunk))
	if err != nil {
		return 0, err
	}
	defer full.Close()
	fullBodies, err := tx.PrepareContext(ctx, insertBodiesSQL(itemChunk))
	if err != nil {
		return 0, err
	}
	defer fullBodies.Close()
	args := make([]any, 0, itemChunk*cols)
	bodyArgs := make([]any, 0, itemChunk*cols)
	ids := make([]string, 0, itemChunk)
	var seq int64
	bytes := 0
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		var err error
		if len(ids) == itemChunk {
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, insertItemsSQL(len(ids)), args...)
		}
		if isUniqueViolation(err) {
			return duplicateCustomID(ctx, tx, batchPK, ids)
		}
		if err == nil {
			if len(ids) == itemChunk {
				_, err = fullBodies.ExecContext(ctx, bodyArgs...)
			} else {
				_, err = tx.ExecContext(ctx, insertBodiesSQL(len(ids)), bodyArgs...)
			}
		}
		args, bodyArgs, ids, bytes = args[:0], bodyArgs[:0], ids[:0], 0
		return err
	}
	for it, err := range items {
		if err != nil {
			return 0, err
		}
		if it == nil {
			return 0, infergate.Errorf(infergate.EInvalid, "item %d is missing", seq)
		}
		if it.CustomID == "" {
			return 0, infergate.Errorf(infergate.EInvalid, "item %d has no custom_id", seq)
		}
		body := it.Body
		if body == nil {
			body = []byte{}
		}
		args = append(args, batchPK, seq, it.CustomID)
		bodyArgs = append(bodyArgs, batchPK, seq, body)
		ids = append(ids, it.CustomID)
		seq++
		bytes += len(body)
		if len(ids) == itemChunk || bytes >= itemChunkBytes {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return int(seq), nil
}

func insertItemsSQL(n int) string {
	return insertSQL(`INSERT INTO items (batch_pk, seq, custom_id) VALUES `, n)
}

func insertBodiesSQL(n int) string {
	return insertSQL(`INSERT INTO item_bodies (batch_pk, seq, body) VALUES `, n)
}

// insertSQL appends n rows of three placeholders to head.
func insertSQL(head string, n int) string {
	var sb strings.Builder
	sb.WriteString(head)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`(?, ?, ?)`)
	}
	return sb.String()
}

// duplicateCustomID names the custom_id that made an insert of ids fail.
func duplicateCustomID(ctx context.Context, tx *sql.Tx, batchPK int64, ids []string) error {
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			return infergate.Errorf(infergate.EInvalid, "duplicate custom_id %q", id)
		}
		seen[id] = true
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM items WHERE batch_pk = ? AND custom_id = ?`, batchPK, id).Scan(&one)
		if err == nil {
			return infergate.Errorf(infergate.EInvalid, "duplicate custom_id %q", id)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	return infergate.Errorf(infergate.EInvalid, "duplicate custom_id")
}

// GetBatch implements jobs.Store.
func (s *Store) GetBatch(ctx context.Context, owner, id string) (*jobs.Batch, error) {
	b, err := scanBatch(s.r.QueryRowContext(ctx, `SELECT `+batchCols+` FROM batches WHERE id = ? AND owner = ?`, id, owner))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, infergate.Errorf(infergate.ENotFound, "no such batch: %s", id)
	}
	return b, s.dbErr(err)
}

func (s *Store) queryBatches(ctx context.Context, query string, args ...any) ([]*jobs.Batch, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.dbErr(err)
	}
	defer rows.Close()
	var bs []*jobs.Batch
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, s.dbErr(err)
		}
		bs = append(bs, b)
	}
	return bs, s.dbErr(rows.Err())
}

// ListBatches implements jobs.Store.
func (s *Store) ListBatches(ctx context.Context, owner, after string, limit int) ([]*jobs.Batch, bool, error) {
	limit = jobs.ClampLimit(limit)
	cursor := int64(1<<63 - 1)
	if after != "" {
		err := s.r.QueryRowContext(ctx, `SELECT pk FROM batches WHERE id = ? AND owner = ?`, after, owner).Scan(&cursor)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, infergate.Errorf(infergate.EInvalid, "after: no such batch: %s", after)
		}
		if err != nil {
			return nil, false, s.dbErr(err)
		}
	}
	bs, err := s.queryBatches(ctx, `SELECT `+batchCols+` FROM batches WHERE owner = ? AND pk < ? ORDER BY pk DESC LIMIT ?`,
		owner, cursor, limit+1)
	if err != nil {
		return nil, false, err
	}
	more := len(bs) > limit
	if more {
		bs = bs[:limit]
	}
	return bs, more, nil
}

// ActiveBatches implements jobs.Store.
func (s *Store) ActiveBatches(ctx context.Context) ([]*jobs.Batch, error) {
	return s.queryBatches(ctx, `SELECT `+batchCols+` FROM batches WHERE status IN `+activeStatuses+` ORDER BY pk`)
}

// UpdateBatchStatus implements jobs.Store.
func (s *Store) UpdateBatchStatus(ctx context.Context, id string, from, to jobs.Status, at time.Time) error {
	return s.transition(ctx, id, from, to, at, jobs.Outcome{})
}

// FinishBatch implements jobs.Store.
func (s *Store) FinishBatch(ctx context.Context, id string, from, to jobs.Status, at time.Time, out jobs.Outcome) error {
	if !to.Terminal() {
		return infergate.Errorf(infergate.EInvalid, "FinishBatch: %s is not a terminal status", to)
	}
	return s.transition(ctx, id, from, to, at, out)
}

func (s *Store) transition(ctx context.Context, id string, from, to jobs.Status, at time.Time, out jobs.Outcome) error {
	if !jobs.CanTransition(from, to) {
		return infergate.Errorf(infergate.EInvalid, "a batch cannot go from %s to %s", from, to)
	}
	if at.IsZero() {
		at = s.clk.Now()
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var pk int64
		var status, errs string
		err := tx.QueryRowContext(ctx, `SELECT pk, status, errors FROM batches WHERE id = ?`, id).Scan(&pk, &status, &errs)
		if errors.Is(err, sql.ErrNoRows) {
			return infergate.Errorf(infergate.ENotFound, "no such batch: %s", id)
		}
		if err != nil {
			return err
		}
		if jobs.Status(status) != from {
			return infergate.Errorf(infergate.EConflict, "batch %s is %s, not %s", id, status, from)
		}
		if len(out.Errors) > 0 {
			var all []jobs.LineError
			if errs != "" {
				if err := json.Unmarshal([]byte(errs), &all); err != nil {
					return fmt.Errorf("batch %s: errors: %w", id, err)
				}
			}
			if errs, err = marshalOrEmpty(append(all, out.Errors...)); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE batches SET status = ?, `+statusCol[to]+` = ?, errors = ?,
				output_file_id = CASE WHEN ? <> '' THEN ? ELSE output_file_id END,
				error_file_id = CASE WHEN ? <> '' THEN ? ELSE error_file_id END
			WHERE pk = ? AND status = ?`,
			string(to), ts(at), errs, out.OutputFileID, out.OutputFileID, out.ErrorFileID, out.ErrorFileID, pk, string(from))
		return err
	})
}

// ---- Items ----

// batchPK returns the batch's pk and status inside a transaction.
func batchPK(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) (int64, jobs.Status, error) {
	var pk int64
	var status string
	err := q.QueryRowContext(ctx, `SELECT pk, status FROM batches WHERE id = ?`, id).Scan(&pk, &status)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", infergate.Errorf(infergate.ENotFound, "no such batch: %s", id)
	}
	return pk, jobs.Status(status), err
}

// LeaseItems implements jobs.Store. The select and the mark are one
// UPDATE ... RETURNING statement inside a BEGIN IMMEDIATE transaction, so
// no other writer can run between them.
func (s *Store) LeaseItems(ctx context.Context, batchID, owner string, n int, leaseFor time.Duration) ([]*jobs.Item, error) {
	switch {
	case n <= 0:
		return nil, infergate.Errorf(infergate.EInvalid, "lease: n must be positive")
	case leaseFor <= 0:
		return nil, infergate.Errorf(infergate.EInvalid, "lease: duration must be positive")
	case owner == "":
		return nil, infergate.Errorf(infergate.EInvalid, "lease: owner is required")
	}
	now := s.clk.Now()
	until := tm(ts(now.Add(leaseFor)))
	var items []*jobs.Item
	err := s.write(ctx, func(tx *sql.Tx) error {
		pk, status, err := batchPK(ctx, tx, batchID)
		if err != nil {
			return err
		}
		if status != jobs.StatusInProgress {
			return infergate.Errorf(infergate.EConflict, "batch %s is %s, not in_progress", batchID, status)
		}
		// The first n due items in seq order: pending ones (items_state,
		// in seq order) and ones whose lease expired (items_lease_until).
		rows, err := tx.QueryContext(ctx, leaseSQL, owner, ts(until), pk, ts(now), n)
		if err != nil {
			return err
		}
		for rows.Next() {
			it := &jobs.Item{BatchID: batchID, State: jobs.ItemLeased, LeaseOwner: owner, LeaseUntil: until}
			var next int64
			if err := rows.Scan(&it.Seq, &it.CustomID, &it.Attempts, &next, &it.Error); err != nil {
				rows.Close()
				return err
			}
			it.NextAttemptAt = tm(next)
			items = append(items, it)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		return loadBodies(ctx, tx, pk, items)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(items, func(a, b *jobs.Item) int { return cmp.Compare(a.Seq, b.Seq) })
	return items, nil
}

// The due items of a batch (?3) at a time (?4), in seq order, at most ?5:
// pending ones from items_state (in seq order, next_attempt_at in the
// index) and ones whose lease expired from items_lease_until.
const (
	leasePendingSQL = `SELECT seq FROM items INDEXED BY items_state
		WHERE batch_pk = ?3 AND state = 'pending' AND next_attempt_at <= ?4 ORDER BY seq LIMIT ?5`
	leaseExpiredSQL = `SELECT seq FROM items INDEXED BY items_lease_until
		WHERE batch_pk = ?3 AND state = 'leased' AND lease_until <= ?4 ORDER BY seq LIMIT ?5`
	leaseSQL = `UPDATE items
	SET state = 'leased', lease_owner = ?1, lease_until = ?2, attempts = attempts + 1
	WHERE batch_pk = ?3 AND seq IN (
		SELECT seq FROM (` + leasePendingSQL + `)
		UNION ALL
		SELECT seq FROM (` + leaseExpiredSQL + `)
		ORDER BY seq LIMIT ?5)
	RETURNING seq, custom_id, attempts, next_attempt_at, error`
)

// releaseSQL gives back owner's leases: each batch's leased items, by
// items_state.
const releaseSQL = `UPDATE items
	SET state = 'pending', attempts = max(attempts - 1, 0), lease_until = 0, next_attempt_at = 0
	WHERE batch_pk IN (SELECT pk FROM batches) AND state = 'leased' AND lease_owner = ?`

// loadBodies fills in the request bodies of items (all of batch pk).
func loadBodies(ctx context.Context, tx *sql.Tx, pk int64, items []*jobs.Item) error {
	if len(items) == 0 {
		return nil
	}
	bySeq := make(map[int64]*jobs.Item, len(items))
	var q strings.Builder
	q.WriteString(`SELECT seq, body FROM item_bodies WHERE batch_pk = ? AND seq IN (`)
	args := make([]any, 0, len(items)+1)
	args = append(args, pk)
	for i, it := range items {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteByte('?')
		args = append(args, it.Seq)
		bySeq[it.Seq] = it
	}
	q.WriteByte(')')
	rows, err := tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	found := 0
	for rows.Next() {
		var seq int64
		var body []byte
		if err := rows.Scan(&seq, &body); err != nil {
			return err
		}
		if it := bySeq[seq]; it != nil {
			it.Body = body
			found++
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if found != len(items) {
		return infergate.Errorf(infergate.EInternal, "%d of %d leased items have no stored body", len(items)-found, len(items))
	}
	return nil
}

// CompleteItems implements jobs.Store.
func (s *Store) CompleteItems(ctx context.Context, owner string, results []jobs.ItemResult) ([]jobs.ItemKey, error) {
	if err := jobs.CheckItemResults(results); err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, nil
	}
	var stale []jobs.ItemKey
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		stale, err = completeItems(ctx, tx, owner, results)
		return err
	})
	if err != nil {
		return nil, err
	}
	return stale, nil
}

func completeItems(ctx context.Context, tx *sql.Tx, owner string, results []jobs.ItemResult) (stale []jobs.ItemKey, err error) {
	type counts struct {
		done, failed int
		cost         float64
	}
	pks := map[string]int64{}
	bumps := map[int64]*counts{}
	finish, err := tx.PrepareContext(ctx, `UPDATE items SET state = ?, result = ?, status_code = ?, error = ?, lease_until = 0
		WHERE batch_pk = ? AND seq = ? AND state = 'leased' AND lease_owner = ?`)
	if err != nil {
		return stale, err
	}
	defer finish.Close()
	retry, err := tx.PrepareContext(ctx, `UPDATE items SET state = 'pending', next_attempt_at = ?, error = ?, lease_until = 0
		WHERE batch_pk = ? AND seq = ? AND state = 'leased' AND lease_owner = ?`)
	if err != nil {
		return stale, err
	}
	defer retry.Close()
	for _, r := range results {
		pk, ok := pks[r.BatchID]
		if !ok {
			if pk, _, err = batchPK(ctx, tx, r.BatchID); err != nil {
				return stale, err
			}
			pks[r.BatchID] = pk
			bumps[pk] = &counts{}
		}
		var res sql.Result
		if r.State == jobs.ItemPending {
			res, err = retry.ExecContext(ctx, ts(r.NextAttemptAt), r.Error, pk, r.Seq, owner)
		} else {
			res, err = finish.ExecContext(ctx, string(r.State), r.Result, r.StatusCode, r.Error, pk, r.Seq, owner)
		}
		if err != nil {
			return stale, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return stale, err
		} else if n == 0 {
			stale = append(stale, jobs.ItemKey{BatchID: r.BatchID, Seq: r.Seq})
			continue
		}
		switch r.State {
		case jobs.ItemDone:
			bumps[pk].done++
		case jobs.ItemFailed:
			bumps[pk].failed++
		}
		// Every applied outcome's cost counts, a retry's too: the
		// attempt's work was done.
		bumps[pk].cost += r.CostUSD
	}
	for pk, c := range bumps {
		if c.done == 0 && c.failed == 0 && c.cost == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE batches SET completed = completed + ?, failed = failed + ?, cost_usd = cost_usd + ?
			WHERE pk = ?`, c.done, c.failed, c.cost, pk); err != nil {
			return stale, err
		}
	}
	return stale, nil
}

// RetryItem implements jobs.Store.
func (s *Store) RetryItem(ctx context.Context, owner, batchID string, seq int64, nextAttemptAt time.Time, errMsg string) error {
	return jobs.RetryItem(ctx, s, owner, batchID, seq, nextAttemptAt, errMsg)
}

// ReleaseLeases implements jobs.Store.
func (s *Store) ReleaseLeases(ctx context.Context, owner string) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, releaseSQL, owner)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// CancelPending implements jobs.Store.
func (s *Store) CancelPending(ctx context.Context, batchID, reason string) (int, error) {
	now := s.clk.Now()
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		pk, _, err := batchPK(ctx, tx, batchID)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE items
			SET state = 'failed', error = ?, result = NULL, status_code = 0, lease_until = 0
			WHERE batch_pk = ? AND state IN ('pending', 'leased') AND (state = 'pending' OR lease_until <= ?)`,
			reason, pk, ts(now))
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE batches SET failed = failed + ? WHERE pk = ?`, n, pk)
		return err
	})
	return int(n), err
}

// CountItems implements jobs.Store.
func (s *Store) CountItems(ctx context.Context, batchID string) (jobs.ItemCounts, error) {
	var c jobs.ItemCounts
	pk, _, err := batchPK(ctx, s.r, batchID)
	if err != nil {
		return c, s.dbErr(err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT state, count(*) FROM items WHERE batch_pk = ? GROUP BY state`, pk)
	if err != nil {
		return c, s.dbErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return c, s.dbErr(err)
		}
		switch jobs.ItemState(state) {
		case jobs.ItemPending:
			c.Pending = n
		case jobs.ItemLeased:
			c.Leased = n
		case jobs.ItemDone:
			c.Done = n
		case jobs.ItemFailed:
			c.Failed = n
		}
	}
	return c, s.dbErr(rows.Err())
}

// ItemResults implements jobs.Store. It reads resultPage items per query
// and calls fn with no query open.
func (s *Store) ItemResults(ctx context.Context, batchID string, state jobs.ItemState, fn func(*jobs.Item) error) error {
	if !state.Valid() {
		return infergate.Errorf(infergate.EInvalid, "unknown item state %q", state)
	}
	pk, _, err := batchPK(ctx, s.r, batchID)
	if err != nil {
		return s.dbErr(err)
	}
	after := int64(-1)
	page := make([]*jobs.Item, 0, resultPage)
	for {
		page = page[:0]
		rows, err := s.r.QueryContext(ctx, `SELECT seq, custom_id, attempts, lease_owner, lease_until, next_attempt_at,
				result, status_code, error
			FROM items WHERE batch_pk = ? AND state = ? AND seq > ? ORDER BY seq LIMIT ?`,
			pk, string(state), after, resultPage)
		if err != nil {
			return s.dbErr(err)
		}
		for rows.Next() {
			it := &jobs.Item{BatchID: batchID, State: state}
			var until, next int64
			if err := rows.Scan(&it.Seq, &it.CustomID, &it.Attempts, &it.LeaseOwner, &until, &next,
				&it.Result, &it.StatusCode, &it.Error); err != nil {
				rows.Close()
				return s.dbErr(err)
			}
			it.LeaseUntil, it.NextAttemptAt = tm(until), tm(next)
			page = append(page, it)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return s.dbErr(err)
		}
		for _, it := range page {
			if err := fn(it); err != nil {
				return err
			}
		}
		if len(page) < resultPage {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}
