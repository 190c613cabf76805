// Package postgres is the scale-out jobs.Store: one PostgreSQL database
// shared by every replica, through pgx.
//
// # Replicas
//
// Files, batches and items live in the database, so any replica serves
// any file or batch, and every replica's runner leases items of every
// active batch. Nothing is kept in process memory between calls.
//
// # Concurrency
//
// Transactions run at READ COMMITTED. Leasing is one statement: a
// SELECT ... ORDER BY seq LIMIT n FOR UPDATE SKIP LOCKED of the due items,
// feeding an UPDATE that marks them leased. Rows another transaction has
// locked are skipped, and a row that another leaser changed since the
// statement's snapshot is rechecked against the due test on its newest
// version before it is locked, so no item is leased to two owners at
// once, and concurrent leasers do not queue behind each other. An expired
// lease is simply due again: a live replica takes over a dead one's items
// once their leases end.
//
// Deadlocks are avoided by one lock order: item rows first, in
// (batch, seq) order (CompleteItems, CancelPending and ReleaseLeases lock
// them with an ordered SELECT ... FOR UPDATE before changing them), then
// batch rows in pk order (the counters).
//
// Two connection pools keep a CreateBatch transaction, whose item sequence
// may read the store (the input file), from starving the reads it needs:
// transactions and writes use one, single-statement reads the other.
//
// NOTE: Times come from each replica's clock (the Store contract), so a
// lease expires when the clock of the replica that looks at it says so.
// Replicas need synchronized clocks (NTP): a clock ahead by d rescues
// leases d early, re-executing (never double-recording) their items.
//
// # Durability
//
// A method returns once its transaction has committed, which is as
// durable as the server's settings make it (synchronous_commit=on, the
// default, flushes the WAL first).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
)

const (
	// chunkSize is the size of a stored file content row.
	chunkSize = 1 << 20
	// itemChunk is how many items CreateBatch sends per COPY, and
	// itemChunkBytes the most body bytes it buffers before sending.
	itemChunk      = 1024
	itemChunkBytes = 4 << 20
	// resultPage is how many items ItemResults reads per query.
	resultPage = 512
	// staleUpload is how long an upload may go without storing a chunk
	// before its partial content is removed.
	staleUpload = time.Hour
)

// Store is a jobs.Store on one PostgreSQL database.
type Store struct {
	// w runs transactions and writes; r runs single-statement reads.
	w, r *pgxpool.Pool
	clk  clock.Clock

	closeOnce sync.Once
}

var _ jobs.Store = (*Store)(nil)

// IsURL reports whether s is a PostgreSQL connection URL
// (postgres:// or postgresql://), as the server's store setting takes it.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Open connects to the database at url (postgres://user:pass@host:port/db?
// sslmode=...&search_path=..., or any URL pgx accepts; a missing password
// is taken from PGPASSWORD or ~/.pgpass), brings its schema to the current
// version and returns the store. clk is the store's only source of "now".
//
// pgxpool settings in the URL apply to each of the two pools, e.g.
// pool_max_conns (default max(4, number of CPUs)). Behind PgBouncer in
// transaction mode, add default_query_exec_mode=exec (pgx prepares and
// caches statements per connection by default).
func Open(ctx context.Context, url string, clk clock.Clock) (*Store, error) {
	if !IsURL(url) {
		return nil, infergate.Errorf(infergate.EInvalid, "postgres job store: want a postgres:// or postgresql:// URL")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx masks the password in its parse errors.
		return nil, infergate.Errorf(infergate.EInvalid, "postgres job store: %v", err)
	}
	if clk == nil {
		clk = clock.Real{}
	}
	where := cfg.ConnConfig.Host + "/" + cfg.ConnConfig.Database
	fail := func(err error) error { return fmt.Errorf("postgres job store: open %s: %w", where, err) }
	w, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fail(err)
	}
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fail(err)
	}
	r, err := pgxpool.NewWithConfig(ctx, cfg.Copy())
	if err != nil {
		w.Close()
		return nil, fail(err)
	}
	s := &Store{w: w, r: r, clk: clk}
	if err := s.removeStaleUploads(ctx); err != nil {
		s.Close()
		return nil, fail(err)
	}
	return s, nil
}

// Close closes the connection pools. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.r.Close()
		s.w.Close()
	})
	return nil
}

// tx runs fn in a transaction on the write pool.
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.w.Begin(ctx)
	if err != nil {
		return s.dbErr(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return s.dbErr(err)
	}
	return s.dbErr(tx.Commit(ctx))
}

// dbErr wraps a database error; application errors and context errors
// pass through.
func (s *Store) dbErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *infergate.Error
	if errors.As(err, &ae) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("postgres job store: %w", err)
}

// pgCode returns the SQLSTATE of a PostgreSQL error, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

const uniqueViolation = "23505"

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
	_, err := s.w.Exec(ctx, `DELETE FROM files WHERE NOT ready AND updated_at < $1`, ts(s.clk.Now().Add(-staleUpload)))
	return s.dbErr(err)
}

// CreateFile implements jobs.Store. The content is stored in 1 MiB rows,
// each committed on its own, so that a slow upload holds no transaction
// open; the file row is marked ready in a last statement.
func (s *Store) CreateFile(ctx context.Context, f *jobs.File, content io.Reader) (err error) {
	id := f.ID
	if id == "" {
		id = jobs.NewFileID()
	}
	now := tm(ts(s.clk.Now()))
	if err := s.removeStaleUploads(ctx); err != nil {
		return err
	}
	var pk int64
	err = s.w.QueryRow(ctx, `INSERT INTO files (id, owner, purpose, filename, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $5) RETURNING pk`,
		id, f.Owner, f.Purpose, f.Filename, ts(now)).Scan(&pk)
	if pgCode(err) == uniqueViolation {
		return infergate.Errorf(infergate.EConflict, "file %s already exists", id)
	}
	if err != nil {
		return s.dbErr(err)
	}
	defer func() {
		if err != nil {
			// Leave nothing behind, even if ctx has ended.
			_, _ = s.w.Exec(context.WithoutCancel(ctx), `DELETE FROM files WHERE pk = $1`, pk)
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
			_, err := s.w.Exec(ctx, `WITH c AS (INSERT INTO file_chunks (file_pk, idx, data) VALUES ($1, $2, $3))
				UPDATE files SET updated_at = $4 WHERE pk = $1`, pk, idx, buf[:n], ts(s.clk.Now()))
			if err != nil {
				return s.dbErr(err)
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
	tag, err := s.w.Exec(ctx, `UPDATE files SET bytes = $1, ready = true WHERE pk = $2`, size, pk)
	if err != nil {
		return s.dbErr(err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("postgres job store: file %s vanished during its upload", id)
	}
	f.ID, f.Bytes, f.CreatedAt = id, size, now
	return nil
}

const fileCols = `id, owner, purpose, filename, bytes, created_at`

func scanFile(row pgx.Row) (*jobs.File, error) {
	var f jobs.File
	var created int64
	if err := row.Scan(&f.ID, &f.Owner, &f.Purpose, &f.Filename, &f.Bytes, &created); err != nil {
		return nil, err
	}
	f.CreatedAt = tm(created)
	return &f, nil
}

// GetFile implements jobs.Store.
func (s *Store) GetFile(ctx context.Context, owner, id string) (*jobs.File, error) {
	f, err := scanFile(s.r.QueryRow(ctx, `SELECT `+fileCols+` FROM files WHERE id = $1 AND owner = $2 AND ready`, id, owner))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, infergate.Errorf(infergate.ENotFound, "no such file: %s", id)
	}
	return f, s.dbErr(err)
}

// ListFiles implements jobs.Store.
func (s *Store) ListFiles(ctx context.Context, owner, after string, limit int) ([]*jobs.File, bool, error) {
	limit = jobs.ClampLimit(limit)
	cursor := int64(1<<63 - 1)
	if after != "" {
		err := s.r.QueryRow(ctx, `SELECT pk FROM files WHERE id = $1 AND owner = $2 AND ready`, after, owner).Scan(&cursor)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, false, infergate.Errorf(infergate.EInvalid, "after: no such file: %s", after)
		}
		if err != nil {
			return nil, false, s.dbErr(err)
		}
	}
	rows, err := s.r.Query(ctx, `SELECT `+fileCols+` FROM files
		WHERE owner = $1 AND ready AND pk < $2 ORDER BY pk DESC LIMIT $3`, owner, cursor, limit+1)
	if err != nil {
		return nil, false, s.dbErr(err)
	}
	files, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*jobs.File, error) { return scanFile(row) })
	if err != nil {
		return nil, false, s.dbErr(err)
	}
	more := len(files) > limit
	if more {
		files = files[:limit]
	}
	return files, more, nil
}

// OpenFileContent implements jobs.Store. The reader fetches one 1 MiB row
// per query from the read pool and holds no connection between reads.
func (s *Store) OpenFileContent(ctx context.Context, owner, id string) (io.ReadCloser, error) {
	var pk, size int64
	err := s.r.QueryRow(ctx, `SELECT pk, bytes FROM files WHERE id = $1 AND owner = $2 AND ready`, id, owner).Scan(&pk, &size)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, infergate.Errorf(infergate.ENotFound, "no such file: %s", id)
	}
	if err != nil {
		return nil, s.dbErr(err)
	}
	return &contentReader{s: s, ctx: ctx, id: id, pk: pk, size: size}, nil
}

type contentReader struct {
	s      *Store
	ctx    context.Context //nolint:containedctx // the reader fetches with its opener's ctx, as documented on jobs.Store
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
		err := c.s.r.QueryRow(c.ctx, `SELECT data FROM file_chunks WHERE file_pk = $1 AND idx = $2`, c.pk, c.idx).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && len(data) == 0) {
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

// DeleteFile implements jobs.Store. It locks the file row first, so that
// it and a CreateBatch that reads the file (which key-share locks it)
// serialize: either the batch sees no file, or the delete sees the batch.
func (s *Store) DeleteFile(ctx context.Context, owner, id string) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var pk int64
		err := tx.QueryRow(ctx, `SELECT pk FROM files WHERE id = $1 AND owner = $2 AND ready FOR UPDATE`, id, owner).Scan(&pk)
		if errors.Is(err, pgx.ErrNoRows) {
			return infergate.Errorf(infergate.ENotFound, "no such file: %s", id)
		}
		if err != nil {
			return err
		}
		var batchID string
		err = tx.QueryRow(ctx, `SELECT id FROM batches WHERE input_file_id = $1 AND status IN `+activeStatuses+` LIMIT 1`, id).Scan(&batchID)
		if err == nil {
			return infergate.Errorf(infergate.EConflict, "file %s is the input of batch %s, which is still active", id, batchID)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM files WHERE pk = $1`, pk)
		return err
	})
}
