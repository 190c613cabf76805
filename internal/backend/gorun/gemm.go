package gorun

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// GEMM is a single-threaded float32 matrix multiply. All matrices are
// row-major; lda, ldb and ldc are row strides.
//
// Sgemm overwrites C (m×n) with A·op(B), where A is m×k. With transB, B is
// n×k and op(B) = Bᵀ; otherwise B is k×n. Bias, alpha and beta are applied
// by the caller after the product.
//
// The session calls Sgemm concurrently on disjoint blocks of C (that is how
// backend.Options.Threads is honoured), so implementations must be safe for
// concurrent use and need not parallelise themselves. The executor always
// passes transB=true (it pre-transposes constant weights once at Open);
// transB=false must still be correct.
type GEMM interface {
	Sgemm(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int)
}

// Gonum is a GEMM on gonum's pure-Go BLAS (blas32), whose float32 dot and
// axpy kernels are SSE assembly on amd64.
//
// It cuts the product into pieces itself: panels of at most gonumMB rows of
// A times as many rows of B as fit in gonumL2 bytes, each over the whole of
// k. Small pieces keep gonum on its serial path (it would otherwise start a
// goroutine per 64×64 block on every call; the session parallelises
// already), the panel of B is reused from L2 by every row of A, and each
// dot product streams whole rows, which the hardware prefetchers handle far
// better than short segments (2.5× at batch 1 on the reference MLP).
// Not splitting k also means every element of C is one dot product over k,
// so results do not depend on m: batching is bitwise invariant.
type Gonum struct{}

const (
	gonumMB = 64
	gonumL2 = 256 << 10
)

// Sgemm implements GEMM.
func (Gonum) Sgemm(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkArgs(transB, m, n, k, a, lda, b, ldb, c, ldc)
	if k == 0 {
		zero(m, n, c, ldc)
		return
	}
	impl := blas32.Implementation()
	tB := blas.NoTrans
	if transB {
		tB = blas.Trans
	}
	// Fewer than gonum's minParBlock (4) blocks of 64 columns per call.
	nb := min(max(gonumL2/(4*k), 16), 192)
	for j0 := 0; j0 < n; j0 += nb {
		w := min(nb, n-j0)
		var bp []float32
		if transB {
			bp = b[j0*ldb:]
		} else {
			bp = b[j0:]
		}
		for i0 := 0; i0 < m; i0 += gonumMB {
			h := min(gonumMB, m-i0)
			impl.Sgemm(blas.NoTrans, tB, h, w, k, 1, a[i0*lda:], lda, bp, ldb, 0, c[i0*ldc+j0:], ldc)
		}
	}
}

func zero(m, n int, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		clear(c[i*ldc : i*ldc+n])
	}
}

// Tiled is a pure-Go GEMM with register tiling. For the A·Bᵀ case it
// computes 2×3 blocks of C (1×6 for a lone row) as dot products over the
// whole of k held in registers. It walks B in panels of rows that fit in
// tiledL2 bytes, so every pair of rows of A reuses the panel from L2, and
// each dot product streams whole rows. The tile sizes are the largest whose
// accumulators and products fit the 15 usable SSE registers under the Go
// compiler's scheduling; larger tiles spill and run at half the speed.
// There is no SIMD: pure Go has none.
//
// Every element of C is one sequential sum over k, whatever m, n or its
// position, so a row's result does not depend on the other rows of the
// batch: batching is bitwise invariant.
type Tiled struct{}

const tiledL2 = 256 << 10

// Sgemm implements GEMM.
func (Tiled) Sgemm(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkArgs(transB, m, n, k, a, lda, b, ldb, c, ldc)
	zero(m, n, c, ldc)
	if !transB {
		sgemmNN(m, n, k, a, lda, b, ldb, c, ldc)
		return
	}
	if k == 0 {
		return
	}
	pairs := m &^ 1
	panel := max(tiledL2/(4*k), 1) / 6 * 6
	panel = max(panel, 6)
	for j0 := 0; j0 < n; j0 += panel {
		j1 := min(j0+panel, n)
		for i := 0; i < pairs; i += 2 {
			ai, ci := a[i*lda:], c[i*ldc:]
			j := j0
			for ; j+3 <= j1; j += 3 {
				kern2x3(k, ai, lda, b[j*ldb:], ldb, ci[j:], ldc)
			}
			for ; j < j1; j++ {
				bj := b[j*ldb:][:k]
				ci[j] += dot(ai[:k], bj)
				ci[ldc+j] += dot(ai[lda:][:k], bj)
			}
		}
		// The last row of an odd m: a matrix-vector product.
		if pairs < m {
			ai, ci := a[pairs*lda:], c[pairs*ldc:]
			j := j0
			for ; j+6 <= j1; j += 6 {
				kern1x6(k, ai, b[j*ldb:], ldb, ci[j:])
			}
			for ; j+3 <= j1; j += 3 {
				kern1x3(k, ai, b[j*ldb:], ldb, ci[j:])
			}
			for ; j < j1; j++ {
				ci[j] += dot(ai[:k], b[j*ldb:][:k])
			}
		}
	}
}

func checkArgs(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 || lda < k || ldc < n {
		panic("gorun: bad Sgemm dimensions")
	}
	bRows, bCols := k, n
	if transB {
		bRows, bCols = n, k
	}
	if ldb < bCols {
		panic("gorun: bad ldb")
	}
	if k > 0 && (len(a) < (m-1)*lda+k || (bRows > 0 && len(b) < (bRows-1)*ldb+bCols)) {
		panic("gorun: Sgemm operand too short")
	}
	if len(c) < (m-1)*ldc+n {
		panic("gorun: Sgemm result too short")
	}
}

func dot(x, y []float32) float32 {
	y = y[:len(x)]
	var s float32
	for i, v := range x {
		s += v * y[i]
	}
	return s
}

// The kernels below re-slice every operand to len(a0) so that the compiler
// drops the bounds checks from the inner loops.

// kern2x3 adds A[0:2,0:kb]·B[0:3,0:kb]ᵀ to C[0:2,0:3].
func kern2x3(kb int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	a0 := a[:kb]
	a1 := a[lda:][:len(a0)]
	b0 := b[:len(a0)]
	b1 := b[ldb:][:len(a0)]
	b2 := b[2*ldb:][:len(a0)]
	var c00, c01, c02, c10, c11, c12 float32
	for p, x0 := range a0 {
		x1 := a1[p]
		y0, y1, y2 := b0[p], b1[p], b2[p]
		c00 += x0 * y0
		c01 += x0 * y1
		c02 += x0 * y2
		c10 += x1 * y0
		c11 += x1 * y1
		c12 += x1 * y2
	}
	c0 := c[:3]
	c0[0] += c00
	c0[1] += c01
	c0[2] += c02
	c1 := c[ldc:][:3]
	c1[0] += c10
	c1[1] += c11
	c1[2] += c12
}

// kern1x3 adds a[0:kb]·B[0:3,0:kb]ᵀ to c[0:3].
func kern1x3(kb int, a []float32, b []float32, ldb int, c []float32) {
	a0 := a[:kb]
	b0 := b[:len(a0)]
	b1 := b[ldb:][:len(a0)]
	b2 := b[2*ldb:][:len(a0)]
	var c0, c1, c2 float32
	for p, x := range a0 {
		c0 += x * b0[p]
		c1 += x * b1[p]
		c2 += x * b2[p]
	}
	c = c[:3]
	c[0] += c0
	c[1] += c1
	c[2] += c2
}

// kern1x6 adds a[0:kb]·B[0:6,0:kb]ᵀ to c[0:6]: six independent sums keep
// the FP adders busy in the matrix-vector case.
func kern1x6(kb int, a []float32, b []float32, ldb int, c []float32) {
	a0 := a[:kb]
	b0 := b[:len(a0)]
	b1 := b[ldb:][:len(a0)]
	b2 := b[2*ldb:][:len(a0)]
	b3 := b[3*ldb:][:len(a0)]
	b4 := b[4*ldb:][:len(a0)]
	b5 := b[5*ldb:][:len(a0)]
	var c0, c1, c2, c3, c4, c5 float32
	for p, x := range a0 {
		c0 += x * b0[p]
		c1 += x * b1[p]
		c2 += x * b2[p]
		c3 += x * b3[p]
		c4 += x * b4[p]
		c5 += x * b5[p]
	}
	c = c[:6]
	c[0] += c0
	c[1] += c1
	c[2] += c2
	c[3] += c3
	c[4] += c4
	c[5] += c5
}

// sgemmNN computes C += A·B for row-major B (k×n) as a sequence of row
// updates C[i,:] += A[i,p]·B[p,:]. It is the straightforward kernel; the
// executor avoids it by transposing B.
func sgemmNN(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		ci := c[i*ldc : i*ldc+n]
		ai := a[i*lda : i*lda+k]
		for p, x := range ai {
			bp := b[p*ldb : p*ldb+n]
			for j, y := range bp {
				ci[j] += x * y
			}
		}
	}
}
