package redis

import (
	"context"
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/outbound-dev/outbound/internal/store"
)

// A KV binding is one string key per entry, expiring with Redis's own
// TTL, and a sorted set of its keys (all scored 0, so ordered by bytes)
// that List pages through. A key that expired leaves its index entry
// behind until a List walks past it or the sweeper runs.
type kv struct {
	s       *Store
	binding string
	index   string // the sorted set of keys
	prefix  string // of the value keys
}

// KV implements store.Store.
func (s *Store) KV(binding string) store.KV {
	return &kv{s: s, binding: binding, index: s.keys.kvIndex(binding), prefix: s.keys.kvPrefix(binding)}
}

// Get implements store.KV. While the server is out of reach it answers
// from the values this replica read or found missing last (see lastKnown).
func (k *kv) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	st := k.s.cache.stamp(k.binding, key)
	octx, cancel := k.s.op(ctx)
	defer cancel()
	var get *goredis.StringCmd
	var ttl *goredis.DurationCmd
	_, err := k.s.c.Pipelined(octx, func(p goredis.Pipeliner) error {
		get = p.Get(octx, k.prefix+key)
		ttl = p.PTTL(octx, k.prefix+key)
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		if ctx.Err() == nil && unavailable(err) {
			if v, found, ok := k.s.cache.get(k.binding, key, time.Now()); ok {
				k.s.health.down(err)
				return v, found, nil
			}
		}
		return nil, false, k.s.fail(ctx, "KV "+k.binding+" get", err)
	}
	if errors.Is(get.Err(), goredis.Nil) {
		k.s.cache.put(st, k.binding, key, nil, false, time.Time{})
		return nil, false, nil
	}
	v := []byte(get.Val())
	var exp time.Time
	if d := ttl.Val(); d > 0 {
		exp = time.Now().Add(d)
	}
	k.s.cache.put(st, k.binding, key, v, true, exp)
	return v, true, nil
}

// Put implements store.KV. An expiry already past deletes the key.
func (k *kv) Put(ctx context.Context, key string, value []byte, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.CheckKey(key); err != nil {
		return err
	}
	if !expires.IsZero() && !expires.After(time.Now()) {
		return k.Delete(ctx, key)
	}
	ch := store.Change{Kind: store.KVChanged, Binding: k.binding, Key: key}
	octx, cancel := k.s.op(ctx)
	defer cancel()
	_, err := k.s.c.TxPipelined(octx, func(p goredis.Pipeliner) error {
		if expires.IsZero() {
			p.Set(octx, k.prefix+key, value, 0)
		} else {
			p.Do(octx, "SET", k.prefix+key, value, "PXAT", expires.UnixMilli())
		}
		p.ZAdd(octx, k.index, goredis.Z{Member: key})
		p.Publish(octx, k.s.keys.channel(), k.s.encode(ch))
		return nil
	})
	k.s.cache.invalidate(k.binding, key) // even on failure: it may have committed
	if err != nil {
		return k.s.fail(ctx, "KV "+k.binding+" put", err)
	}
	k.s.Notify(ch)
	return nil
}

// Delete implements store.KV.
func (k *kv) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := store.Change{Kind: store.KVChanged, Binding: k.binding, Key: key}
	octx, cancel := k.s.op(ctx)
	defer cancel()
	_, err := k.s.c.TxPipelined(octx, func(p goredis.Pipeliner) error {
		p.Del(octx, k.prefix+key)
		p.ZRem(octx, k.index, key)
		p.Publish(octx, k.s.keys.channel(), k.s.encode(ch))
		return nil
	})
	k.s.cache.invalidate(k.binding, key)
	if err != nil {
		return k.s.fail(ctx, "KV "+k.binding+" delete", err)
	}
	k.s.Notify(ch)
	return nil
}

// List implements store.KV: keys in byte order from the index, skipping
// (and reaping) entries whose key has expired. The cursor is the last key
// of the previous page, as in the bolt store.
func (k *kv) List(ctx context.Context, prefix, cursor string, limit int) ([]string, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	limit = store.PageSize(limit)
	from := "-"
	if prefix != "" {
		from = "[" + prefix
	}
	if cursor != "" && cursor >= prefix {
		from = "(" + cursor
	}
	octx, cancel := k.s.op(ctx)
	defer cancel()
	var keys []string
	for {
		count := int64(max(limit+1-len(keys), 32))
		members, err := k.s.c.ZRangeArgs(octx, goredis.ZRangeArgs{Key: k.index, Start: from, Stop: "+", ByLex: true, Count: count}).Result()
		if err != nil {
			return nil, "", k.s.fail(ctx, "KV "+k.binding+" list", err)
		}
		past := false // reached keys beyond the prefix
		cands := members
		for i, m := range members {
			if !strings.HasPrefix(m, prefix) {
				cands, past = members[:i], true
				break
			}
		}
		if len(cands) > 0 {
			exists := make([]*goredis.IntCmd, len(cands))
			_, err := k.s.c.Pipelined(octx, func(p goredis.Pipeliner) error {
				for i, m := range cands {
					exists[i] = p.Exists(octx, k.prefix+m)
				}
				return nil
			})
			if err != nil {
				return nil, "", k.s.fail(ctx, "KV "+k.binding+" list", err)
			}
			var dead []string
			for i, m := range cands {
				if exists[i].Val() == 1 {
					keys = append(keys, m)
				} else {
					dead = append(dead, m)
				}
			}
			if len(dead) > 0 {
				k.s.reap(octx, k.index, k.prefix, dead) // best effort; the sweeper retries
			}
		}
		if past || int64(len(members)) < count || len(keys) > limit {
			break
		}
		from = "(" + members[len(members)-1]
	}
	next := ""
	if len(keys) > limit {
		keys = keys[:limit]
		next = keys[limit-1]
	}
	return keys, next, nil
}

// reapScript removes index entries whose key is gone, checking each on
// the server so that a key written again meanwhile keeps its entry.
var reapScript = goredis.NewScript(`
local n = 0
for i = 2, #ARGV do
	if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then
		n = n + redis.call('ZREM', KEYS[1], ARGV[i])
	end
end
return n`)

func (s *Store) reap(ctx context.Context, index, prefix string, members []string) (int, error) {
	args := make([]any, 0, len(members)+1)
	args = append(args, prefix)
	for _, m := range members {
		args = append(args, m)
	}
	return reapScript.Run(ctx, s.c, []string{index}, args...).Int()
}

// Sweep removes the index entries of expired keys in every binding and
// returns how many. Reads never see those keys; this only reclaims memory.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	total := 0
	iter := s.c.Scan(ctx, 0, s.keys.p+"kvi:*", 100).Iterator()
	for iter.Next(ctx) {
		index := iter.Val()
		prefix := s.keys.p + "kv:" + strings.TrimPrefix(index, s.keys.p+"kvi:") + ":"
		from := "-"
		for {
			octx, cancel := s.op(ctx)
			members, err := s.c.ZRangeArgs(octx, goredis.ZRangeArgs{Key: index, Start: from, Stop: "+", ByLex: true, Count: 500}).Result()
			if err == nil && len(members) > 0 {
				var n int
				n, err = s.reap(octx, index, prefix, members)
				total += n
			}
			cancel()
			if err != nil {
				return total, s.fail(ctx, "sweep expired KV keys", err)
			}
			if len(members) < 500 {
				break
			}
			from = "(" + members[len(members)-1]
		}
	}
	if err := iter.Err(); err != nil {
		return total, s.fail(ctx, "sweep expired KV keys", err)
	}
	return total, nil
}

func (s *Store) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		if n, err := s.Sweep(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("store: sweeping expired KV keys failed", "error", err.Error())
			}
		} else if n > 0 {
			s.log.Debug("store: swept expired KV keys", "count", n)
		}
	}
}

// lastKnown remembers the KV values (and absences) this replica read most
// recently, so that handlers keep reading them while the server is out of
// reach: requests are decided on the last known state. A change, from
// here or from the feed, drops the entry; a feed reconnect drops them all,
// since changes may have been missed. Only small values are kept.
type lastKnown struct {
	mu sync.Mutex
	// A read started before an invalidation of its key must not fill the
	// cache: every invalidation bumps its key's stripe, clear bumps epoch.
	epoch   uint64
	stripes [256]uint64
	cache   *lru.Cache[string, lastValue]
}

// stamp identifies the state of a key's invalidations.
type stamp struct{ epoch, stripe uint64 }

type lastValue struct {
	v     []byte
	found bool
	exp   time.Time
}

const (
	lastKnownEntries  = 4096
	lastKnownMaxBytes = 4 << 10
)

func newLastKnown() *lastKnown {
	c, _ := lru.New[string, lastValue](lastKnownEntries) // a positive size cannot fail
	return &lastKnown{cache: c}
}

func cacheKey(binding, key string) string {
	return strconv.Itoa(len(binding)) + ":" + binding + key
}

func stripe(ck string) int {
	h := fnv.New32a()
	h.Write([]byte(ck))
	return int(h.Sum32() % 256)
}

func (l *lastKnown) stamp(binding, key string) stamp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return stamp{l.epoch, l.stripes[stripe(cacheKey(binding, key))]}
}

func (l *lastKnown) put(st stamp, binding, key string, v []byte, found bool, exp time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ck := cacheKey(binding, key)
	if st != (stamp{l.epoch, l.stripes[stripe(ck)]}) || len(v) > lastKnownMaxBytes {
		l.cache.Remove(ck)
		return
	}
	l.cache.Add(ck, lastValue{v: v, found: found, exp: exp})
}

// get returns the last known value; ok is false when there is none.
func (l *lastKnown) get(binding, key string, now time.Time) (v []byte, found, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.cache.Get(cacheKey(binding, key))
	if !ok {
		return nil, false, false
	}
	if e.found && !e.exp.IsZero() && !now.Before(e.exp) {
		return nil, false, true // expired since: known to be gone
	}
	return append([]byte{}, e.v...), e.found, true
}

func (l *lastKnown) invalidate(binding, key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ck := cacheKey(binding, key)
	l.stripes[stripe(ck)]++
	l.cache.Remove(ck)
}

func (l *lastKnown) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch++
	l.cache.Purge()
}
