// Package planner predicts how infergate would serve a workload, before it
// is served, by simulating the scheduler against a measured latency profile.
// `infergate plan` uses it to compare serving modes and settings and to
// recommend the cheapest one that meets a latency objective.
//
// # Model
//
// The simulation is a discrete-event simulation of internal/batching's
// scheduler for one class of traffic:
//
//   - Each request is one item. Requests queue FIFO, are never dropped and
//     never expire (no admission control).
//   - There is one worker per instance. An idle worker forms a batch as soon
//     as the policy says the queue is ready, taking up to MaxBatchSize
//     requests from the front of the queue; while every instance is busy
//     requests keep queueing, and the next worker to free up takes up to
//     MaxBatchSize at once if the policy is ready then.
//   - The policies are the scheduler's: single (every request alone), size
//     (fire at MaxBatchSize), time (fire at periodic ticks every
//     BatchTimeout from the start; a request waits for the first tick after
//     its arrival) and hybrid (fire at MaxBatchSize or when the oldest
//     request has waited MaxQueueDelay).
//   - Every request carries the SLO as its timeout, as if the server's
//     class had default_timeout = SLO and timeout_action = reject. As in the
//     scheduler, that adds deadline pressure to every policy: a batch fires
//     no later than the oldest request's deadline minus the estimated batch
//     execution time, less a margin of a quarter of it and 1 ms. The
//     estimate is the mean of the simulated service time, which is what the
//     server's moving average converges to. Unlike the server, a request
//     whose deadline passes is still served (and counted as late).
//   - After the last arrival the server closes and, as Scheduler.Close
//     does, flushes the queue regardless of policy, so that a finite
//     workload does not end with a partial batch held until its deadline.
//   - The execution time of a batch of n is drawn from a lognormal
//     distribution whose median and 99th percentile are the profile's p50
//     and p99 at n, interpolated as internal/perfmodel does (linearly
//     between measured sizes, extrapolated at the per-item cost of the
//     nearest one). A profile with p99 <= p50 gives constant service times.
//     The random source is a seeded PCG, so a simulation is deterministic
//     for a seed.
//   - Every simulated instance has the profile's per-instance latency. The
//     profile was measured while its configuration's instances ran
//     concurrently; simulating more replicas than that assumes they do not
//     contend any further (separate cores or machines).
//
// Batch mode is simulated apart from the scheduler: the requests that arrive
// in each completion window run as one job at the end of the window, in
// batches of the profile's largest measured size, back to back on the
// instances, and instances are paid for only while the job runs.
//
// # Costs
//
// Every figure is derived from simulated times and the instance price. The
// loaded cost of the real-time and hybrid modes is the provisioned instance
// time, Instances x (last completion - first arrival); the busy cost is the
// time instances spent executing batches. A month is 30 days at the mean
// arrival rate of the simulated arrivals.
//
// A simulation is finite, so a setting whose capacity is below the demand
// would still finish, with a long queue, and could meet a long SLO. A
// setting whose instances were busy for longer than the arrivals lasted is
// reported Overloaded and never meets the SLO.
//
// # Planning
//
// MakePlan simulates a fixed grid of settings per mode, each at the
// smallest instance count that meets the SLO, and recommends one by cost
// and p99 (see MakePlan). Its reasons quote the simulated and measured
// numbers that decided, never a built-in threshold.
package planner
