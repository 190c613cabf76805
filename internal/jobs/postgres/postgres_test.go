package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/infergate/infergate"
	"github.com/infergate/infergate/internal/clock"
	"github.com/infergate/infergate/internal/jobs"
	"github.com/infergate/infergate/internal/jobs/postgres/pgtest"
	"github.com/infergate/infergate/internal/jobs/storetest"
)

// One server for the package's tests, started by the first that needs it.
var shared struct {
	once sync.Once
	srv  *pgtest.Server
	err  error
}

func server(t testing.TB) *pgtest.Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = pgtest.Launch() })
	if errors.Is(shared.err, pgtest.ErrUnavailable) {
		t.Skip(shared.err)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func mustOpen(t *testing.T, url string, clk clock.Clock) *Store {
	t.Helper()
	s, err := Open(t.Context(), url, clk)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := server(t)
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		url := srv.URL(t)
		return func(t *testing.T, clk clock.Clock) jobs.Store { return mustOpen(t, url, clk) }
	})
}

func items(n int) func(yield func(*jobs.Item, error) bool) {
	return func(yield func(*jobs.Item, error) bool) {
		for i := range n {
			if !yield(&jobs.Item{CustomID: fmt.Sprintf("c-%d", i), Body: []byte(`{"inputs":[1]}`)}, nil) {
				return
			}
		}
	}
}

// setup creates an in_progress batch of n items.
func setup(t testing.TB, s *Store, n int) *jobs.Batch {
	ctx := context.Background()
	f := &jobs.File{Owner: "o", Purpose: jobs.PurposeBatch}
	if err := s.CreateFile(ctx, f, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	b := &jobs.Batch{Owner: "o", InputFileID: f.ID, Endpoint: "/e", Status: jobs.StatusInProgress}
	if _, err := s.CreateBatch(ctx, b, items(n)); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReopenAndSchemaVersion(t *testing.T) {
	url := server(t).URL(t)
	s := mustOpen(t, url, clock.NewFake(storetest.Start))
	b := setup(t, s, 5)
	s.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.GetBatch(t.Context(), "o", b.ID); err == nil {
		t.Fatal("GetBatch after Close succeeded")
	}
	s = mustOpen(t, url, clock.Real{})
	var version int
	if err := s.r.QueryRow(t.Context(), `SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema version %d, %v; want %d", version, err, len(migrations))
	}
	if got, err := s.GetBatch(t.Context(), "o", b.ID); err != nil || got.Total != 5 {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	url := server(t).URL(t)
	s := mustOpen(t, url, clock.Real{})
	if _, err := s.w.Exec(t.Context(), `UPDATE schema_version SET version = $1`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(t.Context(), url, clock.Real{}); err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v", err)
	}
}

// TestConcurrentOpen: replicas starting together migrate once.
func TestConcurrentOpen(t *testing.T) {
	url := server(t).URL(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(t.Context(), url, clock.Real{})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenBadURL(t *testing.T) {
	for _, u := range []string{"", "jobs.db", "mysql://x", "postgres://u:secret@h:notaport/db"} {
		s, err := Open(t.Context(), u, nil)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%q) succeeded", u)
		}
		if infergate.ErrorCode(err) != infergate.EInvalid {
			t.Errorf("Open(%q) = %v, want EInvalid", u, err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q): the error shows the password: %v", u, err)
		}
	}
}

// TestLeaseManyReplicas hammers one batch from several stores (replicas),
// each with several workers and a short lease, while the fake clock
// moves, so that expired leases are rescued under contention: an item may
// be executed twice, but recorded once, and every completion that the
// store accepted belongs to the item's last lease.
func TestLeaseManyReplicas(t *testing.T) {
	const n = 3000
	url := server(t).URL(t)
	clk := clock.NewFake(storetest.Start)
	stores := []*Store{mustOpen(t, url, clk), mustOpen(t, url, clk), mustOpen(t, url, clk)}
	b := setup(t, stores[0], n)
	ctx := t.Context()
	var mu sync.Mutex
	accepted := map[int64]string{}
	rescued, staleN := 0, 0
	var wg sync.WaitGroup
	errc := make(chan error, 32)
	stop := make(chan struct{})
	go func() { // the clock moves by a lease every few milliseconds
		for {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
				clk.Advance(time.Second)
			}
		}
	}()
	for r, st := range stores {
		for w := range 4 {
			owner := fmt.Sprintf("r%d-w%d", r, w)
			wg.Go(func() {
				for round := 0; ; round++ {
					its, err := st.LeaseItems(ctx, b.ID, owner, 1+w*8, time.Second)
					if err != nil {
						errc <- err
						return
					}
					if len(its) == 0 {
						c, err := st.CountItems(ctx, b.ID)
						if err != nil {
							errc <- err
							return
						}
						if c.Runnable() == 0 {
							return
						}
						time.Sleep(time.Millisecond)
						continue
					}
					var rs []jobs.ItemResult
					for _, it := range its {
						if it.Attempts > 1 {
							mu.Lock()
							rescued++
							mu.Unlock()
						}
						rs = append(rs, jobs.ItemResult{BatchID: b.ID, Seq: it.Seq, State: jobs.ItemDone, StatusCode: 200,
							Result: []byte(owner)})
					}
					stale, err := st.CompleteItems(ctx, owner, rs)
					if err != nil {
						errc <- err
						return
					}
					mu.Lock()
					staleN += len(stale)
					for _, r := range rs {
						if !containsKey(stale, r.Seq) {
							if prev, ok := accepted[r.Seq]; ok {
								mu.Unlock()
								errc <- fmt.Errorf("item %d recorded by %s and %s", r.Seq, prev, owner)
								return
							}
							accepted[r.Seq] = owner
						}
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(accepted) != n {
		t.Fatalf("%d items recorded, want %d", len(accepted), n)
	}
	t.Logf("%d leases of items leased before, %d stale completions", rescued, staleN)
	if rescued == 0 {
		t.Log("no lease expired under contention this time: the test proved less than it could")
	}
	got, err := stores[1].GetBatch(ctx, "o", b.ID)
	if err != nil || got.Completed != n {
		t.Fatalf("batch %+v, %v", got, err)
	}
	err = stores[2].ItemResults(ctx, b.ID, jobs.ItemDone, func(it *jobs.Item) error {
		if string(it.Result) != accepted[it.Seq] {
			return fmt.Errorf("item %d holds %s's result, accepted from %s", it.Seq, it.Result, accepted[it.Seq])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func containsKey(keys []jobs.ItemKey, seq int64) bool {
	for _, k := range keys {
		if k.Seq == seq {
			return true
		}
	}
	return false
}

// TestCreateBatchReadsStoreInside: the item sequence of CreateBatch may
// read the store (the server reads the input file there), even with more
// concurrent creations than a pool has connections.
func TestCreateBatchReadsStoreInside(t *testing.T) {
	url := server(t).URL(t)
	s := mustOpen(t, url+"&pool_max_conns=2", clock.Real{})
	ctx := t.Context()
	f := &jobs.File{Owner: "o", Purpose: jobs.PurposeBatch}
	if err := s.CreateFile(ctx, f, strings.NewReader(strings.Repeat("x", 3<<20))); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			src := func(yield func(*jobs.Item, error) bool) {
				for j := range 3 {
					rc, err := s.OpenFileContent(ctx, "o", f.ID)
					if err == nil {
						_, err = rc.Read(make([]byte, 10))
						rc.Close()
					}
					if !yield(&jobs.Item{CustomID: fmt.Sprint(j), Body: []byte("{}")}, err) {
						return
					}
				}
			}
			_, errs[i] = s.CreateBatch(ctx, &jobs.Batch{Owner: "o", InputFileID: f.ID, Endpoint: "/e"}, src)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestQueryPlans checks that leasing walks the runnable index, and that
// leasing and completing find items and bodies by key, instead of
// scanning the batch's items.
func TestQueryPlans(t *testing.T) {
	url := server(t).URL(t)
	s := mustOpen(t, url, clock.Real{})
	setup(t, s, 5000)
	ctx := t.Context()
	if _, err := s.w.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	explain := func(sql string, args ...any) string {
		t.Helper()
		tx, err := s.w.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		rows, err := tx.Query(ctx, `EXPLAIN `+sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	lease := explain(leaseSQL, "batch_x", int64(1), 64, "o", int64(2))
	t.Logf("lease plan:\n%s", lease)
	if !strings.Contains(lease, "items_runnable") || strings.Contains(lease, "Seq Scan on item") {
		t.Errorf("lease plan:\n%s", lease)
	}
	seqs := []int64{1, 2, 3}
	complete := explain(completeSQL, int64(1), seqs, "o", []string{"done", "done", "failed"}, []int32{200, 200, 500},
		[][]byte{nil, nil, nil}, []string{"", "", "x"}, []int64{0, 0, 0})
	t.Logf("complete plan:\n%s", complete)
	if strings.Contains(complete, "Seq Scan on item") {
		t.Errorf("complete plan:\n%s", complete)
	}
}

// TestBigFile streams a 64 MiB file in and out, checking its content.
func TestBigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 64 MiB")
	}
	const size = 64 << 20
	url := server(t).URL(t)
	s := mustOpen(t, url, clock.Real{})
	ctx := t.Context()
	f := &jobs.File{Owner: "o", Purpose: jobs.PurposeBatch}
	start := time.Now()
	if err := s.CreateFile(ctx, f, &pattern{n: size}); err != nil {
		t.Fatal(err)
	}
	up := time.Since(start)
	rc, err := s.OpenFileContent(ctx, "o", f.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	start = time.Now()
	buf := make([]byte, 32<<10)
	var off int64
	for {
		n, err := rc.Read(buf)
		for i := range n {
			if buf[i] != byte((off+int64(i))%251) {
				t.Fatalf("byte %d is %d", off+int64(i), buf[i])
			}
		}
		off += int64(n)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
	}
	if off != size {
		t.Fatalf("read %d bytes, want %d", off, size)
	}
	t.Logf("64 MiB: upload %s, download %s", up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// pattern yields n bytes of a fixed pattern without holding them.
type pattern struct{ off, n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := int(min(int64(len(b)), p.n-p.off))
	for i := range k {
		b[i] = byte((p.off + int64(i)) % 251)
	}
	p.off += int64(k)
	return k, nil
}

// BenchmarkLeaseComplete leases n items and records them, as one runner
// does; ns/op is per round of n items.
func BenchmarkLeaseComplete(b *testing.B) {
	for _, n := range []int{64} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			s, err := Open(b.Context(), server(b).URL(b), clock.Real{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			batch := setup(b, s, b.N*n)
			ctx := b.Context()
			rs := make([]jobs.ItemResult, 0, n)
			result := []byte(`{"outputs":[{"name":"y","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)
			b.ResetTimer()
			for range b.N {
				its, err := s.LeaseItems(ctx, batch.ID, "bench", n, time.Minute)
				if err != nil || len(its) != n {
					b.Fatalf("leased %d, %v", len(its), err)
				}
				rs = rs[:0]
				for _, it := range its {
					rs = append(rs, jobs.ItemResult{BatchID: batch.ID, Seq: it.Seq, State: jobs.ItemDone, StatusCode: 200, Result: result})
				}
				if _, err := s.CompleteItems(ctx, "bench", rs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
