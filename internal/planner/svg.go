package planner

import (
	"context"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// CostCurve is, for one mode, the loaded cost per 1k of its cheapest
// SLO-meeting candidate at each rate (NaN where none meets the SLO).
type CostCurve struct {
	Mode      string
	CostPer1k []float64
}

// CostVsLoad plans req at each of rates (req's workload pattern and seed,
// the rate replaced) and returns each mode's cheapest SLO-meeting cost.
func CostVsLoad(ctx context.Context, req Request, rates []float64) ([]CostCurve, error) {
	curves := []CostCurve{{Mode: ModeRealtime}, {Mode: ModeHybrid}, {Mode: ModeBatch}}
	for _, r := range rates {
		q := req
		q.Workload.Rate = r
		p, err := MakePlan(ctx, q)
		if err != nil {
			return nil, err
		}
		for i := range curves {
			best := math.NaN()
			for _, c := range p.Candidates {
				if c.Settings.Mode == curves[i].Mode && c.MeetsSLO && (math.IsNaN(best) || c.CostPer1k < best) {
					best = c.CostPer1k
				}
			}
			curves[i].CostPer1k = append(curves[i].CostPer1k, best)
		}
	}
	return curves, nil
}

// WriteCostSVG plots cost per 1k against load (both log scales), one line
// per mode, for people.
func WriteCostSVG(w io.Writer, title string, rates []float64, curves []CostCurve) error {
	const (
		pw, ph, ml, mt = 560.0, 320.0, 90.0, 50.0
	)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, c := range curves {
		for _, v := range c.CostPer1k {
			if !math.IsNaN(v) && v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if len(rates) < 2 || math.IsInf(lo, 1) {
		return fmt.Errorf("planner: nothing to plot")
	}
	llo, lhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if lhi == llo {
		lhi++
	}
	rlo, rhi := math.Log10(rates[0]), math.Log10(rates[len(rates)-1])
	x := func(r float64) float64 { return ml + pw*(math.Log10(r)-rlo)/(rhi-rlo) }
	y := func(v float64) float64 { return mt + ph - ph*(math.Log10(v)-llo)/(lhi-llo) }
	colors := map[string]string{ModeRealtime: "#d62728", ModeHybrid: "#1f77b4", ModeBatch: "#2ca02c"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", ml+pw+150, mt+ph+60)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="24" font-size="15">%s</text>`+"\n", ml, html.EscapeString(title))
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", ml, mt, pw, ph)
	for e := llo; e <= lhi; e++ {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/><text x="%.0f" y="%.1f" text-anchor="end">$1e%.0f</text>`+"\n",
			ml, y(math.Pow(10, e)), ml+pw, y(math.Pow(10, e)), ml-6, y(math.Pow(10, e))+4, e)
	}
	for _, r := range rates {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x(r), mt+ph+16, fmtNum(r))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">load, requests/s</text><text x="%.0f" y="%.0f">cost per 1k requests (loaded), cheapest setting that meets the SLO</text>`+"\n",
		ml+pw/2, mt+ph+36, ml, mt-8)
	for i, c := range curves {
		var seg []string
		flush := func() {
			if len(seg) > 0 {
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(seg, " "), colors[c.Mode])
				seg = nil
			}
		}
		for k, v := range c.CostPer1k {
			if math.IsNaN(v) || v <= 0 {
				flush()
				continue
			}
			seg = append(seg, fmt.Sprintf("%.1f,%.1f", x(rates[k]), y(v)))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s at %s req/s: $%s per 1k</title></circle>`+"\n",
				x(rates[k]), y(v), colors[c.Mode], c.Mode, fmtNum(rates[k]), sig3(v))
		}
		flush()
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="14" height="4" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			ml+pw+20, mt+20+float64(i)*20, colors[c.Mode], ml+pw+40, mt+25+float64(i)*20, c.Mode)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
