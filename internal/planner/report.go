package planner

import "time"

// Report is the plan as JSON-ready maps, the shape 'infergate plan --json'
// and POST /v1/plan print: "candidates" and "recommendation" (mode,
// settings, p99_ms, cost_per_1k, reasons, runner_up); source says where
// the profile came from.
func Report(p *Plan, source string, slo time.Duration) map[string]any {
	cands := make([]map[string]any, 0, len(p.Candidates))
	for _, c := range p.Candidates {
		cands = append(cands, resultJSON(c))
	}
	r := p.Recommendation
	rec := map[string]any{"mode": r.Mode, "settings": SettingsJSON(r.Settings), "p99_ms": r.P99MS, "cost_per_1k": r.CostPer1k,
		"cost_per_month": r.Result.CostPerMonth, "slo_attainment": r.Result.SLOAttainment, "reasons": r.Reasons}
	if r.RunnerUp != nil {
		rec["runner_up"] = resultJSON(*r.RunnerUp)
	}
	return map[string]any{"profile": source, "slo_ms": msOf(slo), "candidates": cands, "recommendation": rec}
}

// SettingsJSON is s as a JSON-ready map.
func SettingsJSON(s Settings) map[string]any {
	out := map[string]any{"mode": s.Mode, "instances": s.Instances, "description": s.String()}
	if s.Mode == ModeBatch {
		out["window_s"] = s.Window.Seconds()
		return out
	}
	out["policy"], out["max_batch_size"] = s.Policy, s.MaxBatchSize
	if s.MaxQueueDelay > 0 {
		out["max_queue_delay_ms"] = msOf(s.MaxQueueDelay)
	}
	if s.BatchTimeout > 0 {
		out["batch_timeout_ms"] = msOf(s.BatchTimeout)
	}
	return out
}

func resultJSON(c Result) map[string]any {
	return map[string]any{"mode": c.Settings.Mode, "settings": SettingsJSON(c.Settings), "p50_ms": msOf(c.P50), "p99_ms": msOf(c.P99),
		"slo_attainment": c.SLOAttainment, "throughput_rps": c.ThroughputRPS, "avg_batch": c.AvgBatch, "utilization": c.Utilization,
		"instances": c.Settings.Instances, "cost_per_1k": c.CostPer1k, "cost_per_1k_busy": c.CostPer1kBusy, "cost_per_month": c.CostPerMonth,
		"meets_slo": c.MeetsSLO, "overloaded": c.Overloaded}
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
