package profile

import (
	"cmp"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// WriteSVG draws the measured curves for people: throughput and batch p99
// latency against batch size (log2 axis), one line per configuration, the
// choice (if any) marked.
func WriteSVG(w io.Writer, title string, points []Point, choice *Choice) error {
	const (
		pw, ph      = 420.0, 280.0 // one panel's plot area
		ml, mt, gap = 70.0, 50.0, 110.0
		width       = ml + pw + gap + pw + 30
		height      = mt + ph + 90
	)
	byCfg := map[Config][]Point{}
	var cfgs []Config
	maxN, maxT, maxL := 1, 0.0, 0.0
	for _, p := range points {
		c := p.Config()
		if _, ok := byCfg[c]; !ok {
			cfgs = append(cfgs, c)
		}
		byCfg[c] = append(byCfg[c], p)
		maxN = max(maxN, p.BatchSize)
		maxT = max(maxT, p.ItemsPerSec)
		maxL = max(maxL, p.P99MS)
	}
	if len(points) == 0 {
		return fmt.Errorf("profile: nothing to plot")
	}
	maxT, maxL = nice(maxT), nice(maxL)
	lx := math.Log2(float64(maxN))
	xAt := func(x0 float64, n int) float64 {
		if lx == 0 {
			return x0 + pw/2
		}
		return x0 + pw*math.Log2(float64(n))/lx
	}
	yAt := func(v, top float64) float64 { return mt + ph - ph*v/top }
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="22" font-size="15">%s</text>`+"\n", ml, html.EscapeString(title))
	panel := func(x0 float64, label string, top float64, val func(Point) float64) {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0, mt, pw, ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x0, mt-8, html.EscapeString(label))
		for i := 0; i <= 4; i++ {
			v := top * float64(i) / 4
			y := yAt(v, top)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/><text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n",
				x0, y, x0+pw, y, x0-6, y+4, short(v))
		}
		for n := 1; n <= maxN; n *= 2 {
			x := xAt(x0, n)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x, mt+ph+16, n)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">batch size</text>`+"\n", x0+pw/2, mt+ph+34)
		for i, c := range cfgs {
			ps := slices.SortedFunc(slices.Values(byCfg[c]), func(a, b Point) int { return cmp.Compare(a.BatchSize, b.BatchSize) })
			var pts []string
			for _, p := range ps {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xAt(x0, p.BatchSize), yAt(val(p), top)))
			}
			col := colors[i%len(colors)]
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), col)
			for _, p := range ps {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s batch %d: %.0f items/s, p50 %.2f ms, p99 %.2f ms, %d MB</title></circle>`+"\n",
					xAt(x0, p.BatchSize), yAt(val(p), top), col, c, p.BatchSize, p.ItemsPerSec, p.P50MS, p.P99MS, p.MemoryBytes>>20)
			}
		}
		if choice != nil {
			for _, p := range byCfg[Config{choice.Instances, choice.Threads}] {
				if p.BatchSize == choice.BatchSize {
					fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="7" fill="none" stroke="black" stroke-width="2"><title>choice</title></circle>`+"\n",
						xAt(x0, p.BatchSize), yAt(val(p), top))
				}
			}
		}
	}
	panel(ml, "throughput, items/s (all instances)", maxT, func(p Point) float64 { return p.ItemsPerSec })
	panel(ml+pw+gap, "batch latency p99, ms", maxL, func(p Point) float64 { return p.P99MS })
	for i, c := range cfgs {
		x := ml + float64(i)*150
		y := mt + ph + 62
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="14" height="4" fill="%s"/><text x="%.1f" y="%.1f">%d instance(s) x %d thread(s)</text>`+"\n",
			x, y-4, colors[i%len(colors)], x+20, y+1, c.Instances, c.Threads)
	}
	if choice != nil {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">circled: the choice, batch %d on %dx%d</text>`+"\n", ml, mt+ph+82, choice.BatchSize, choice.Instances, choice.Threads)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// nice rounds v up to 1, 2 or 5 times a power of ten.
func nice(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*e {
			return m * e
		}
	}
	return 10 * e
}

func short(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 10 || v == 0:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
