// Package autoscale scales the instances of each model between a minimum
// and a maximum.
//
// # Structure
//
// [Controller] is the decision: pure logic, no goroutines, time taken from
// each [Sample], so that every rule can be tested sample by sample. Its
// [Controller.Observe] returns a [Decision] that carries the trigger, the
// figures it was made on and a sentence. [Scaler] is the loop around one
// controller: every tick it asks a [Source] for a sample, applies a change
// through a [Target], tells the controller ([Controller.Applied]) and
// records an event (kind scale_up or scale_down, outcome applied or
// failed) in a [Recorder]. It exports the decision as gauges for
// Kubernetes HPA or KEDA (see deploy/README.md).
//
// # Signals
//
//   - Utilization: the busy-seconds counter is diffed into busy
//     instance-equivalents and smoothed with an EWMA of time constant
//     Window; utilization is that demand divided by the instance count.
//   - Latency: p99 of the real-time classes and the queue delay, against
//     the SLO.
//   - Backlog: open batch jobs with items left, deadline and measured rate.
//
// # Rules and defaults
//
// See [Controller.Observe] for the rules and [Config] for the defaults:
// target utilization 0.6 with a 10% tolerance band; scale-up cooldown 60s;
// scale-down cooldown and stabilization window 300s; smoothing window 30s;
// latency-trigger cooldown one Window (30s) after a scale-up.
//
// # Concurrency
//
// A Controller is not safe for concurrent use. A Scaler is: Step holds a
// mutex for the whole tick, including the call to SetInstances.
package autoscale
