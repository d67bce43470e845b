package engine

import (
	"fmt"
	"slices"
	"testing"
)

func popAll(q *fairQueue[string]) []string {
	var out []string
	q.drain(func(s string) { out = append(out, s) })
	return out
}

func TestFairQueueTakesTurns(t *testing.T) {
	var q fairQueue[string]
	for i := range 5 {
		q.push("a", fmt.Sprint("a", i))
	}
	q.push("b", "b0")
	q.push("c", "c0")
	q.push("b", "b1")
	if q.len() != 8 || q.laneLen("a") != 5 || q.laneLen("b") != 2 || q.laneLen("x") != 0 {
		t.Fatalf("len %d, a %d, b %d", q.len(), q.laneLen("a"), q.laneLen("b"))
	}
	got := popAll(&q)
	want := []string{"a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if _, ok := q.pop(); ok || q.len() != 0 {
		t.Fatal("an empty queue popped something")
	}
	// pushFront jumps its own lane, not the round.
	q.push("a", "a1")
	q.push("b", "b0")
	q.pushFront("a", "a0")
	q.pushFront("c", "c0")
	if got, want := popAll(&q), []string{"a0", "b0", "c0", "a1"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	// remove keeps the order of the rest and the turn.
	for _, v := range []string{"a0", "a1", "a2"} {
		q.push("a", v)
	}
	q.push("b", "b0")
	q.push("c", "c0")
	is := func(v string) func(string) bool { return func(x string) bool { return x == v } }
	if !q.remove("a", is("a1")) || !q.remove("b", is("b0")) || q.remove("b", is("b0")) || q.remove("x", is("x")) {
		t.Fatal("remove reported wrongly")
	}
	if got, want := popAll(&q), []string{"a0", "c0", "a2"}; !slices.Equal(got, want) || q.laneLen("b") != 0 {
		t.Fatalf("order after remove %v, want %v", got, want)
	}
}

// A lane that never empties does not grow without bound.
func TestFairQueueLaneReusesSpace(t *testing.T) {
	var q fairQueue[int]
	for i := range 10 {
		q.push("a", i)
	}
	for i := range 100000 {
		q.push("a", i)
		q.pop()
	}
	if l := q.lanes["a"]; cap(l.items) > 128 {
		t.Fatalf("lane capacity %d after a steady 10 items", cap(l.items))
	}
}

// FuzzFairQueue checks the queue against a plain model: lanes in a round,
// a key with nothing waiting joining it last.
func FuzzFairQueue(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x80, 0x41, 0xc0, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var q fairQueue[int]
		var order []string
		items := map[string][]int{}
		join := func(k string) {
			if len(items[k]) == 0 {
				order = append(order, k)
			}
		}
		for i, op := range ops {
			k := string(rune('a' + op%4))
			switch op >> 6 {
			case 0:
				if op&0x20 != 0 { // remove the oldest of k
					if len(items[k]) == 0 {
						if q.remove(k, func(int) bool { return true }) {
							t.Fatal("removed from an empty lane")
						}
						continue
					}
					want := items[k][0]
					items[k] = items[k][1:]
					if len(items[k]) == 0 {
						order = slices.DeleteFunc(order, func(x string) bool { return x == k })
					}
					if !q.remove(k, func(v int) bool { return v == want }) {
						t.Fatalf("op %d: %d not removed", i, want)
					}
					continue
				}
				fallthrough
			case 1:
				join(k)
				items[k] = append(items[k], i)
				q.push(k, i)
			case 2:
				if len(order) == 0 {
					if _, ok := q.pop(); ok {
						t.Fatal("popped from an empty queue")
					}
					continue
				}
				h := order[0]
				want := items[h][0]
				items[h] = items[h][1:]
				order = order[1:]
				if len(items[h]) > 0 {
					order = append(order, h)
				}
				got, ok := q.pop()
				if !ok || got != want {
					t.Fatalf("op %d: pop %d %v, want %d", i, got, ok, want)
				}
			case 3:
				join(k)
				items[k] = append([]int{i}, items[k]...)
				q.pushFront(k, i)
			}
			n := 0
			for _, v := range items {
				n += len(v)
			}
			if q.len() != n || q.laneLen(k) != len(items[k]) {
				t.Fatalf("op %d: len %d lane %d, want %d %d", i, q.len(), q.laneLen(k), n, len(items[k]))
			}
		}
	})
}

// A queue serving many instances, each with one item waiting at a time,
// as the pool's waiting queue does under load from many sandboxes.
func BenchmarkFairQueueManyKeys(b *testing.B) {
	var q fairQueue[int]
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprint("sbx-", i)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		q.push(keys[i%len(keys)], i)
		if q.len() > 32 {
			q.pop()
		}
	}
}
