package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are applied in order; migrations[i] moves the schema from
// version i to i+1. Never edit one that has shipped: append a new one.
//
// The tables live in the first schema of the connection's search_path.
// Times are bigint Unix nanoseconds, 0 for "not set": the store's clock
// (not the server's now()) sets them, and nanoseconds keep them exact.
// Batches and files have a bigint identity pk that orders them by creation
// (lists page on it) and keys the child tables; the public IDs are unique
// text columns.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE files (
	pk         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id         text    NOT NULL UNIQUE,
	owner      text    NOT NULL,
	purpose    text    NOT NULL,
	filename   text    NOT NULL,
	bytes      bigint  NOT NULL DEFAULT 0,
	created_at bigint  NOT NULL,
	-- ready is false while the content is being uploaded; such a file is
	-- invisible, and removed if its upload stalls (updated_at).
	ready      boolean NOT NULL DEFAULT false,
	updated_at bigint  NOT NULL
);
CREATE INDEX files_owner ON files (owner, pk) WHERE ready;
CREATE INDEX files_uploading ON files (updated_at) WHERE NOT ready;

CREATE TABLE file_chunks (
	file_pk bigint  NOT NULL REFERENCES files (pk) ON DELETE CASCADE,
	idx     integer NOT NULL,
	data    bytea   NOT NULL,
	PRIMARY KEY (file_pk, idx)
);
-- Chunks are 1 MiB: always stored out of line, uncompressed, so that
-- uploads and downloads cost no compression CPU on the server.
ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE batches (
	pk                bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id                text    NOT NULL UNIQUE,
	owner             text    NOT NULL,
	input_file_id     text    NOT NULL,
	endpoint          text    NOT NULL,
	completion_window text    NOT NULL,
	window_ns         bigint  NOT NULL,
	status            text    NOT NULL CHECK (status IN ('validating', 'in_progress', 'finalizing', 'completed',
		'failed', 'expired', 'cancelling', 'cancelled')),
	metadata          jsonb,
	idempotency_key   text    NOT NULL DEFAULT '',
	request_hash      text    NOT NULL DEFAULT '',
	total             integer NOT NULL DEFAULT 0,
	completed         integer NOT NULL DEFAULT 0,
	failed            integer NOT NULL DEFAULT 0,
	output_file_id    text    NOT NULL DEFAULT '',
	error_file_id     text    NOT NULL DEFAULT '',
	errors            jsonb,
	created_at        bigint  NOT NULL,
	in_progress_at    bigint  NOT NULL DEFAULT 0,
	finalizing_at     bigint  NOT NULL DEFAULT 0,
	completed_at      bigint  NOT NULL DEFAULT 0,
	failed_at         bigint  NOT NULL DEFAULT 0,
	expired_at        bigint  NOT NULL DEFAULT 0,
	cancelling_at     bigint  NOT NULL DEFAULT 0,
	cancelled_at      bigint  NOT NULL DEFAULT 0,
	expires_at        bigint  NOT NULL DEFAULT 0
);
CREATE INDEX batches_owner ON batches (owner, pk);
CREATE UNIQUE INDEX batches_idempotency ON batches (owner, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX batches_active ON batches (pk) WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');
CREATE INDEX batches_input ON batches (input_file_id);

CREATE TABLE items (
	batch_pk        bigint  NOT NULL REFERENCES batches (pk) ON DELETE CASCADE,
	seq             bigint  NOT NULL,
	custom_id       text    NOT NULL,
	state           text    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done', 'failed')),
	attempts        integer NOT NULL DEFAULT 0,
	lease_owner     text    NOT NULL DEFAULT '',
	lease_until     bigint  NOT NULL DEFAULT 0,
	next_attempt_at bigint  NOT NULL DEFAULT 0,
	result          bytea,
	status_code     integer NOT NULL DEFAULT 0,
	error           text    NOT NULL DEFAULT '',
	PRIMARY KEY (batch_pk, seq),
	UNIQUE (batch_pk, custom_id)
);
-- Request bodies live apart from the item rows: every lease and
-- completion writes a new version of an item's row (MVCC), and a body of
-- kilobytes in it would be copied each time.
CREATE TABLE item_bodies (
	batch_pk bigint NOT NULL REFERENCES batches (pk) ON DELETE CASCADE,
	seq      bigint NOT NULL,
	body     bytea  NOT NULL,
	PRIMARY KEY (batch_pk, seq)
);
-- Results, counts and cancellation: by state in seq order.
CREATE INDEX items_state ON items (batch_pk, state, seq);
-- Leasing: the runnable items only, in seq order, so that done and failed
-- items cost nothing to skip.
CREATE INDEX items_runnable ON items (batch_pk, seq) WHERE state IN ('pending', 'leased');
-- ReleaseLeases.
CREATE INDEX items_lease_owner ON items (lease_owner) WHERE state = 'leased';
`,
	// 2: the cost of the work done for a batch, in US dollars: the sum of
	// the costs of the item outcomes recorded (retries included). A
	// constant default: no table rewrite.
	`ALTER TABLE batches ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0;`,
}

// migrateLock is the key of the transaction-level advisory lock that
// serializes migrations of replicas starting together.
const migrateLock = 0x696e66657267 // "inferg"

// migrate brings the schema to the latest version in one transaction. It
// refuses a schema newer than this program's.
func migrate(ctx context.Context, db *pgxpool.Pool) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
		return err
	}
	var v int
	switch err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v); {
	case err == nil:
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
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
		if _, err := tx.Exec(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, len(migrations)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
