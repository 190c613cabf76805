// Package batching queues a model's requests per class and forms batches.
//
// # Classes and priorities
//
// Each model has one FIFO queue per class (urgent, normal, bulk), each with
// its own [Policy]: single, size, time or hybrid batch formation, a queue
// limit, a default timeout and a timeout action. When an instance frees up,
// the urgent queue is looked at first, then normal; bulk runs only when
// neither is ready, and then only as large a batch as its measured
// execution time allows before the next moment another class may become
// ready. Bulk items also fill spare slots of classes with FillWithBulk.
//
// # Request lifecycle and ownership
//
// [Scheduler.Submit] admits a request without blocking (a full queue is an
// EOverloaded error carrying a Retry-After derived from the live latency
// model), then blocks on the request's own result channel. A worker, one
// per model instance, forms a batch under the scheduler's mutex, executes
// it outside the mutex, and completes each request exactly once. Requests
// whose client has gone or whose deadline has passed are completed
// without running when they reach the head of their queue or are taken
// into a batch; none executes after its deadline. A client that leaves
// removes its request from the queue itself.
//
// # Deadlines
//
// Deadlines are enforced in two ways: a queued request past its deadline
// never runs (with timeout_action reject), and every policy fires a batch
// early when the tightest deadline in it, minus the measured execution
// time of the batch and a margin, has come.
//
// # Lock order
//
// Scheduler.mu is the only lock; the latency model and the recorder are
// called with or without it and take only their own locks.
package batching
