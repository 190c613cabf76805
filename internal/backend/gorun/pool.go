package gorun

import "sync"

// gemmJob is one block of a partitioned product.
type gemmJob struct {
	g      GEMM
	m, n   int
	k      int
	a      []float32
	lda    int
	b      []float32
	ldb    int
	c      []float32
	ldc    int
	transB bool
}

func (j *gemmJob) run() {
	j.g.Sgemm(j.transB, j.m, j.n, j.k, j.a, j.lda, j.b, j.ldb, j.c, j.ldc)
}

// pool is a session's set of persistent GEMM workers. Jobs travel by value
// over a channel, so dispatching allocates nothing.
type pool struct {
	jobs chan gemmJob
	done chan struct{}
	stop sync.Once
}

func newPool(workers int) *pool {
	p := &pool{jobs: make(chan gemmJob), done: make(chan struct{}, workers)}
	for range workers {
		go func() {
			for j := range p.jobs {
				j.run()
				p.done <- struct{}{}
			}
		}()
	}
	return p
}

func (p *pool) close() { p.stop.Do(func() { close(p.jobs) }) }

// Work below minParallelWork multiply-adds runs on the calling goroutine:
// waking a worker costs a few microseconds.
const minParallelWork = 1 << 17

// parallelGemm computes C = A·op(B) with up to threads goroutines (the
// caller and threads-1 pool workers) by splitting C into column blocks
// (each worker reads its own rows of B, the large operand in inference) or,
// when C has few columns, row blocks.
func parallelGemm(p *pool, threads int, g GEMM, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	j := gemmJob{g: g, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc}
	if p == nil || threads <= 1 || m*n*k < minParallelWork {
		j.run()
		return
	}
	const colAlign = 6 // a multiple of the kernels' tile widths
	var parts int
	byCols := n >= threads*2*colAlign
	if byCols {
		parts = threads
	} else {
		parts = min(threads, m/2)
		if parts <= 1 {
			j.run()
			return
		}
	}
	total := n
	if !byCols {
		total = m
	}
	chunk := (total + parts - 1) / parts
	if byCols {
		chunk = (chunk + colAlign - 1) / colAlign * colAlign
	}
	sent := 0
	var mine gemmJob
	for lo := 0; lo < total; lo += chunk {
		hi := min(lo+chunk, total)
		part := j
		if byCols {
			part.n = hi - lo
			part.c = c[lo:]
			if transB {
				part.b = b[lo*ldb:]
			} else {
				part.b = b[lo:]
			}
		} else {
			part.m = hi - lo
			part.a = a[lo*lda:]
			part.c = c[lo*ldc:]
		}
		if lo == 0 {
			mine = part
			continue
		}
		p.jobs <- part
		sent++
	}
	mine.run()
	for range sent {
		<-p.done
	}
}
