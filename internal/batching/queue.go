package batching

// queue is a FIFO of requests on a growable ring buffer. It is not safe for
// concurrent use; the scheduler's mutex guards it.
type queue struct {
	buf   []*request
	head  int
	n     int
	items int // sum of the queued requests' items
}

func (q *queue) len() int { return q.n }

func (q *queue) at(i int) *request { return q.buf[(q.head+i)%len(q.buf)] }

func (q *queue) front() *request { return q.buf[q.head] }

func (q *queue) pushBack(r *request) {
	if q.n == len(q.buf) {
		nb := make([]*request, max(8, 2*len(q.buf)))
		for i := range q.n {
			nb[i] = q.at(i)
		}
		q.buf, q.head = nb, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = r
	q.n++
	q.items += r.items
}

func (q *queue) popFront() *request {
	r := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.items -= r.items
	return r
}

func (q *queue) popBack() *request {
	i := (q.head + q.n - 1) % len(q.buf)
	r := q.buf[i]
	q.buf[i] = nil
	q.n--
	q.items -= r.items
	return r
}

// remove deletes r wherever it is, keeping order; it reports whether r was
// queued.
func (q *queue) remove(r *request) bool {
	for i := range q.n {
		if q.at(i) != r {
			continue
		}
		for j := i; j < q.n-1; j++ {
			q.buf[(q.head+j)%len(q.buf)] = q.at(j + 1)
		}
		q.buf[(q.head+q.n-1)%len(q.buf)] = nil
		q.n--
		q.items -= r.items
		return true
	}
	return false
}
