package gorun

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

var gemms = []struct {
	name string
	g    GEMM
}{
	{"tiled", Tiled{}},
	{"gonum", Gonum{}},
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 2*rng.Float32() - 1
	}
	return s
}

// naiveGemm computes A·op(B) in float64.
func naiveGemm(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int) []float64 {
	c := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var bv float32
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(a[i*lda+p]) * float64(bv)
			}
			c[i*n+j] = s
		}
	}
	return c
}

func TestSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{{1, 1, 1}, {1, 8, 5}, {1, 19, 300}, {2, 4, 3}, {3, 5, 7}, {5, 13, 600}, {7, 9, 257}, {4, 0, 3}, {0, 4, 3}, {3, 4, 0}, {16, 17, 513}}
	for _, impl := range gemms {
		for _, sh := range shapes {
			for _, transB := range []bool{true, false} {
				m, n, k := sh[0], sh[1], sh[2]
				t.Run(fmt.Sprintf("%s/%dx%dx%d/transB=%v", impl.name, m, n, k, transB), func(t *testing.T) {
					// Padded strides check that lda/ldb/ldc are honoured.
					lda, ldc := k+3, n+2
					bRows, bCols := k, n
					if transB {
						bRows, bCols = n, k
					}
					ldb := bCols + 1
					a := randSlice(rng, m*lda)
					b := randSlice(rng, bRows*ldb)
					c := randSlice(rng, m*ldc) // garbage to be overwritten
					impl.g.Sgemm(transB, m, n, k, a, lda, b, ldb, c, ldc)
					want := naiveGemm(transB, m, n, k, a, lda, b, ldb)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							if d := math.Abs(float64(c[i*ldc+j]) - want[i*n+j]); d > 1e-4*math.Sqrt(float64(k)+1) {
								t.Fatalf("C[%d,%d] = %v, want %v", i, j, c[i*ldc+j], want[i*n+j])
							}
						}
					}
				})
			}
		}
	}
}

// TestRowInvariance checks that, for A·Bᵀ, a row's result does not depend
// on the other rows: a request's logits must not change with the batch it
// was put in. Tiled guarantees it by construction; Gonum's dot kernel sums
// in an order that depends only on k and B's alignment, so it holds too.
func TestRowInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m, n, k := 7, 200, 700
	a := randSlice(rng, m*k)
	b := randSlice(rng, n*k)
	for _, impl := range gemms {
		c := make([]float32, m*n)
		impl.g.Sgemm(true, m, n, k, a, k, b, k, c, n)
		row := make([]float32, n)
		for i := 0; i < m; i++ {
			impl.g.Sgemm(true, 1, n, k, a[i*k:], k, b, k, row, n)
			for j := range row {
				if row[j] != c[i*n+j] {
					t.Fatalf("%s: row %d col %d: %v alone, %v in a batch", impl.name, i, j, row[j], c[i*n+j])
				}
			}
		}
	}
}

func BenchmarkSgemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, impl := range gemms {
		for _, m := range []int{1, 32} {
			for _, nk := range [][2]int{{3072, 768}, {768, 3072}} {
				n, k := nk[0], nk[1]
				b.Run(fmt.Sprintf("impl=%s/m=%d/n=%d/k=%d", impl.name, m, n, k), func(b *testing.B) {
					a := randSlice(rng, m*k)
					w := randSlice(rng, n*k)
					c := make([]float32, m*n)
					for b.Loop() {
						impl.g.Sgemm(true, m, n, k, a, k, w, k, c, n)
					}
					b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
