// Package jobs holds the durable model of the OpenAI-compatible Batch API:
// files, batches and their items, and the Store interface through which the
// HTTP layer and the batch runner share them. Implementations live in
// subpackages (sqlite; later postgres) and must pass the conformance suite
// in jobs/storetest.
//
// # Batch state machine
//
// Statuses and their names are those of the OpenAI Batch API. The legal
// moves (CanTransition) are:
//
//	validating  → in_progress | failed | cancelling
//	in_progress → finalizing | cancelling | expired | failed
//	finalizing  → completed | expired | failed
//	cancelling  → cancelled
//
// failed, completed, expired and cancelled are terminal (Status.Terminal):
// a terminal batch never changes again and no item of it runs. Every change is a compare-and-set on the current status
// (Store.UpdateBatchStatus, Store.FinishBatch), so two actors (the HTTP
// cancel handler and a runner, or two replicas) cannot both move a batch
// out of the same status.
//
// A batch whose input fails validation goes validating → failed with
// Errors. A running batch goes in_progress → finalizing when every item is
// terminal (Completed+Failed == Total); the runner then writes the output
// and error files from the store and records them with the terminal status
// in one FinishBatch. A cancel moves it to cancelling; the runner calls
// CancelPending(ReasonCancelled), waits for the live leases to end (calling
// CancelPending again for those that expire), writes the files and
// finishes with cancelled. Expiry goes the same way through finalizing:
// in_progress → finalizing, CancelPending(ReasonExpired), wait, files,
// finalizing → expired. LeaseItems hands out work only for in_progress
// batches, so once a batch has left in_progress no replica starts an item
// of it.
//
// # Item state machine and the lease protocol
//
//	pending ──LeaseItems──► leased ──CompleteItems──► done | failed
//	   ▲                      │
//	   └── RetryItem, ────────┘   (and: lease expires → leasable again)
//	       ReleaseLeases
//	pending, expired leased ──CancelPending──► failed (batch_cancelled / batch_expired)
//
// A runner instance has an owner name, unique per process start. It takes
// work with LeaseItems, which atomically selects up to n leasable items in
// Seq order (pending and due, or leased with an expired lease) and marks
// them leased by the owner until now+leaseFor, counting an attempt. It
// reports outcomes with CompleteItems (or RetryItem); a lease holder that
// needs longer than the lease must not rely on its result being kept. On a
// graceful shutdown it calls ReleaseLeases so that its items are picked up
// at once and without an attempt counted. When a runner dies, its leases
// simply expire and any runner leases the items again: this is how items
// held by a crashed process or a dead replica are rescued. Attempts grows
// with every lease, so the runner can fail an item that keeps killing its
// holder (a poison pill) instead of leasing it forever.
//
// # Exactly once
//
// Inference may run more than once for an item (a lease expires while its
// holder is still working, or the holder dies after the work but before
// recording it), but every item is recorded exactly once, and every
// custom_id appears exactly once in the output or error file:
//
//   - An item reaches done or failed only in CompleteItems or
//     CancelPending. CompleteItems applies an outcome only if the item is,
//     inside the same transaction, still leased by the reporting owner;
//     CancelPending only touches items that are pending or whose lease has
//     expired. A terminal item is never changed again. So each item has
//     exactly one terminal outcome, and a stale lease holder's late result
//     is ignored (and reported back as stale).
//   - LeaseItems selects and marks in one transaction (in SQLite, under
//     the database's single write lock; in Postgres, with row locks and
//     SKIP LOCKED), so one lease is granted to one owner at a time.
//   - The batch's Completed and Failed counters are bumped in the
//     transaction that makes items terminal, so they always equal the
//     counts of done and failed items; a batch is complete when
//     Completed+Failed == Total, which survives any crash.
//   - The output and error files are written from the store (ItemResults,
//     in Seq order) only after every item is terminal, and recorded with
//     the terminal status in one transaction (FinishBatch). A crash before
//     that leaves the batch in finalizing (or cancelling), and the runner
//     writes the files again; at worst an unreferenced output file is left
//     behind.
//   - Every committed transaction is durable (the SQLite store fsyncs
//     every commit), so kill -9 at any point loses at most work whose
//     result was not yet committed, and that work's items are still
//     leased or pending and run again.
package jobs
