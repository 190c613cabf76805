package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; migrations[i] moves the schema from
// version i to i+1. Never edit one that has shipped: append a new one.
//
// Times are INTEGER Unix nanoseconds, 0 for "not set". Batches and files
// have an INTEGER pk that orders them by creation (lists page on it) and
// keys the child tables; the public IDs are unique TEXT columns.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE files (
	pk         INTEGER PRIMARY KEY,
	id         TEXT    NOT NULL UNIQUE,
	owner      TEXT    NOT NULL,
	purpose    TEXT    NOT NULL,
	filename   TEXT    NOT NULL,
	bytes      INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	-- ready is 0 while the content is being uploaded; such a file is
	-- invisible, and removed if its upload stalls (updated_at).
	ready      INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL
);
CREATE INDEX files_owner ON files (owner, pk);
CREATE INDEX files_uploading ON files (updated_at) WHERE ready = 0;

CREATE TABLE file_chunks (
	file_pk INTEGER NOT NULL REFERENCES files (pk) ON DELETE CASCADE,
	idx     INTEGER NOT NULL,
	data    BLOB    NOT NULL,
	PRIMARY KEY (file_pk, idx)
);

CREATE TABLE batches (
	pk                INTEGER PRIMARY KEY,
	id                TEXT    NOT NULL UNIQUE,
	owner             TEXT    NOT NULL,
	input_file_id     TEXT    NOT NULL,
	endpoint          TEXT    NOT NULL,
	completion_window TEXT    NOT NULL,
	window_ns         INTEGER NOT NULL,
	status            TEXT    NOT NULL,
	metadata          TEXT    NOT NULL DEFAULT '',
	idempotency_key   TEXT    NOT NULL DEFAULT '',
	request_hash      TEXT    NOT NULL DEFAULT '',
	total             INTEGER NOT NULL DEFAULT 0,
	completed         INTEGER NOT NULL DEFAULT 0,
	failed            INTEGER NOT NULL DEFAULT 0,
	output_file_id    TEXT    NOT NULL DEFAULT '',
	error_file_id     TEXT    NOT NULL DEFAULT '',
	errors            TEXT    NOT NULL DEFAULT '',
	created_at        INTEGER NOT NULL,
	in_progress_at    INTEGER NOT NULL DEFAULT 0,
	finalizing_at     INTEGER NOT NULL DEFAULT 0,
	completed_at      INTEGER NOT NULL DEFAULT 0,
	failed_at         INTEGER NOT NULL DEFAULT 0,
	expired_at        INTEGER NOT NULL DEFAULT 0,
	cancelling_at     INTEGER NOT NULL DEFAULT 0,
	cancelled_at      INTEGER NOT NULL DEFAULT 0,
	expires_at        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX batches_owner ON batches (owner, pk);
CREATE UNIQUE INDEX batches_idempotency ON batches (owner, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX batches_status ON batches (status);
CREATE INDEX batches_input ON batches (input_file_id);

CREATE TABLE items (
	batch_pk        INTEGER NOT NULL REFERENCES batches (pk) ON DELETE CASCADE,
	seq             INTEGER NOT NULL,
	custom_id       TEXT    NOT NULL,
	state           TEXT    NOT NULL DEFAULT 'pending',
	attempts        INTEGER NOT NULL DEFAULT 0,
	lease_owner     TEXT    NOT NULL DEFAULT '',
	lease_until     INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL DEFAULT 0,
	result          BLOB,
	status_code     INTEGER NOT NULL DEFAULT 0,
	error           TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (batch_pk, seq)
);
CREATE UNIQUE INDEX items_custom_id ON items (batch_pk, custom_id);
-- Request bodies live apart from the item rows: leasing and completing
-- rewrite an item's row, and a body of kilobytes in it would be rewritten
-- (overflow pages and all) with every state change.
CREATE TABLE item_bodies (
	batch_pk INTEGER NOT NULL REFERENCES batches (pk) ON DELETE CASCADE,
	seq      INTEGER NOT NULL,
	body     BLOB    NOT NULL,
	PRIMARY KEY (batch_pk, seq)
);
-- Results, counts and cancellation: by state in seq order.
CREATE INDEX items_state ON items (batch_pk, state, seq);
-- Leasing: the runnable items only, in seq order, with the columns the
-- due test reads, so that done and failed items cost nothing to skip.
CREATE INDEX items_runnable ON items (batch_pk, seq, state, next_attempt_at, lease_until)
	WHERE state IN ('pending', 'leased');
-- ReleaseLeases.
CREATE INDEX items_lease_owner ON items (lease_owner) WHERE state = 'leased';
`,
	// 2: the cost of the work done for a batch, in US dollars: the sum of
	// the costs of the item outcomes recorded (retries included).
	`ALTER TABLE batches ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;`,
	// 3: fewer indexes to keep up to date per item. Leasing and completing
	// an item went through four indexes; items_runnable and
	// items_lease_owner changed on both. Leasing now takes pending items
	// in seq order from items_state, which carries next_attempt_at so that
	// items waiting for a retry are skipped without reading their rows
	// (every change of next_attempt_at changes the state too: no extra
	// index writes), and expired leases from items_lease_until (empty but
	// for items in flight); ReleaseLeases looks up each batch's leased
	// items in items_state.
	`
DROP INDEX items_runnable;
DROP INDEX items_lease_owner;
DROP INDEX items_state;
CREATE INDEX items_state ON items (batch_pk, state, seq, next_attempt_at);
CREATE INDEX items_lease_until ON items (batch_pk, lease_until) WHERE state = 'leased';
`,
}

// migrate brings the schema to the latest version in one transaction.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); err {
	case nil:
	case sql.ErrNoRows:
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return err
		}
	default:
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this program's (%d)", v, len(migrations))
	}
	if v == len(migrations) {
		return nil
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(migrations)); err != nil {
		return err
	}
	return tx.Commit()
}
