package engine

// fairQueue holds items in one FIFO lane per key (an instance id) and pops
// them round-robin across the lanes that have any. However many items one
// key has waiting, another key's item waits for at most one of them per
// turn. Not safe for concurrent use: the pool's mutex guards it.
type fairQueue[T any] struct {
	lanes map[string]*lane[T]
	head  *lane[T] // the lane popped next; lanes form a ring
	n     int
	spare []*lane[T] // emptied lanes kept to spare allocations
}

// maxSpareLanes bounds the emptied lanes a queue keeps: with many
// instances each waiting once, every push would otherwise allocate one.
const maxSpareLanes = 64

type lane[T any] struct {
	key        string
	items      []T
	off        int // items[off:] are waiting
	next, prev *lane[T]
}

// len is the number of items waiting.
func (q *fairQueue[T]) len() int { return q.n }

// laneLen is the number of items waiting under key.
func (q *fairQueue[T]) laneLen(key string) int {
	if l := q.lanes[key]; l != nil {
		return len(l.items) - l.off
	}
	return 0
}

// push adds v at the back of key's lane. A key with nothing waiting joins
// the round last.
func (q *fairQueue[T]) push(key string, v T) {
	l := q.lane(key)
	l.items = append(l.items, v)
	q.n++
}

// pushFront adds v at the front of key's lane: it is the lane's next.
func (q *fairQueue[T]) pushFront(key string, v T) {
	l := q.lane(key)
	if l.off > 0 {
		l.off--
		l.items[l.off] = v
	} else {
		l.items = append(l.items, v)
		copy(l.items[1:], l.items)
		l.items[0] = v
	}
	q.n++
}

func (q *fairQueue[T]) lane(key string) *lane[T] {
	if l := q.lanes[key]; l != nil {
		return l
	}
	if q.lanes == nil {
		q.lanes = make(map[string]*lane[T])
	}
	var l *lane[T]
	if n := len(q.spare); n > 0 {
		l, q.spare = q.spare[n-1], q.spare[:n-1]
	} else {
		l = &lane[T]{}
	}
	l.key = key
	q.lanes[key] = l
	if q.head == nil {
		l.next, l.prev = l, l
		q.head = l
	} else { // last in the round: just before head
		l.next, l.prev = q.head, q.head.prev
		l.prev.next = l
		q.head.prev = l
	}
	return l
}

// pop removes and returns the front item of the lane whose turn it is, and
// moves the turn to the next lane.
func (q *fairQueue[T]) pop() (T, bool) {
	var zero T
	l := q.head
	if l == nil {
		return zero, false
	}
	v := l.items[l.off]
	l.items[l.off] = zero
	l.off++
	q.n--
	if l.off == len(l.items) {
		q.unlink(l)
		return v, true
	}
	if l.off >= 32 && 2*l.off >= len(l.items) {
		// A lane that never empties would otherwise grow forever.
		n := copy(l.items, l.items[l.off:])
		clear(l.items[n:])
		l.items, l.off = l.items[:n], 0
	}
	q.head = l.next
	return v, true
}

// remove takes the first item of key's lane that match accepts out of it,
// keeping the order of the rest, and reports whether there was one. It
// costs the lane's length.
func (q *fairQueue[T]) remove(key string, match func(T) bool) bool {
	l := q.lanes[key]
	if l == nil {
		return false
	}
	for i := l.off; i < len(l.items); i++ {
		if !match(l.items[i]) {
			continue
		}
		copy(l.items[l.off+1:i+1], l.items[l.off:i])
		var zero T
		l.items[l.off] = zero
		l.off++
		q.n--
		if l.off == len(l.items) {
			q.unlink(l)
		}
		return true
	}
	return false
}

// unlink takes an emptied lane out of the ring and the map.
func (q *fairQueue[T]) unlink(l *lane[T]) {
	delete(q.lanes, l.key)
	if l.next == l {
		q.head = nil
	} else {
		l.prev.next, l.next.prev = l.next, l.prev
		if q.head == l {
			q.head = l.next
		}
	}
	if cap(l.items) <= 64 && len(q.spare) < maxSpareLanes {
		l.items, l.off, l.next, l.prev, l.key = l.items[:0], 0, nil, nil, ""
		q.spare = append(q.spare, l)
	}
}

// drain removes every item, calling f on each.
func (q *fairQueue[T]) drain(f func(T)) {
	for {
		v, ok := q.pop()
		if !ok {
			return
		}
		f(v)
	}
}
