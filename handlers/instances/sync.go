package instances

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/outbound-dev/outbound/internal/store"
)

// syncer collects the changes other processes made, as the store reports
// them, for the registry's sync goroutine to apply. Reports only name what
// changed; the goroutine reads the record from the store, so whatever
// order reports arrive in, the newest revision wins.
type syncer struct {
	mu     sync.Mutex
	ids    map[string]struct{}
	resync bool
	wake   chan struct{} // capacity 1: one pending wake-up is enough

	unsubscribe func()
	cancel      context.CancelFunc
	done        chan struct{}
	stopOnce    sync.Once
}

func (s *syncer) init() {
	s.ids = map[string]struct{}{}
	s.wake = make(chan struct{}, 1)
}

// note is the store subscription: it must not block or call the store.
func (s *syncer) note(c store.Change) {
	if !c.Remote {
		return // this process's own write, applied by the writer
	}
	s.mu.Lock()
	switch c.Kind {
	case store.Resync:
		s.resync = true
	case store.InstanceCreated, store.InstanceDeleted, store.OverridesChanged, store.HomeChanged:
		s.ids[c.ID] = struct{}{}
	default:
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *syncer) take() (resync bool, ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resync, s.resync = s.resync, false
	for id := range s.ids {
		ids = append(ids, id)
	}
	clear(s.ids)
	return resync, ids
}

func (s *syncer) again() {
	s.mu.Lock()
	s.resync = true
	s.mu.Unlock()
}

func (s *syncer) stop() {
	s.stopOnce.Do(func() {
		if s.unsubscribe != nil {
			s.unsubscribe()
		}
		if s.cancel != nil {
			s.cancel()
			<-s.done
		}
	})
}

// Start applies other processes' writes, as the store reports them, until
// Close. Reports that arrived since Open are applied first.
func (r *Registry) Start() {
	if r.opts.Store == nil || r.sync.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.sync.cancel, r.sync.done = cancel, make(chan struct{})
	go func() {
		defer close(r.sync.done)
		r.syncLoop(ctx)
	}()
}

// Backoff between attempts to apply remote changes while the store fails.
const (
	syncBackoffMin = 100 * time.Millisecond
	syncBackoffMax = 5 * time.Second
	syncTimeout    = 30 * time.Second // one round of reads
)

func (r *Registry) syncLoop(ctx context.Context) {
	wait := syncBackoffMin
	failing := false
	for {
		select {
		case <-r.sync.wake:
		case <-ctx.Done():
			return
		}
		for {
			resync, ids := r.sync.take()
			if !resync && len(ids) == 0 {
				break
			}
			err := r.applyRemote(ctx, resync, ids)
			if err == nil {
				if failing {
					r.log.Info("instances: other replicas' changes applied again")
				}
				wait, failing = syncBackoffMin, false
				continue
			}
			if ctx.Err() != nil {
				return
			}
			// Whatever was missed, a full reread catches up.
			r.sync.again()
			level := slog.LevelDebug // said once per failing spell
			if !failing {
				level, failing = slog.LevelWarn, true
			}
			r.log.Log(ctx, level, "instances: applying other replicas' changes failed; serving the last known state and retrying",
				"error", err.Error(), "retry_in", wait.String())
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
			wait = min(wait*2, syncBackoffMax)
		}
	}
}

func (r *Registry) applyRemote(ctx context.Context, resync bool, ids []string) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if resync {
		return r.resyncAll(ctx)
	}
	for _, id := range ids {
		if err := r.refresh(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// refresh rereads one instance and applies it.
func (r *Registry) refresh(ctx context.Context, id string) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	rec, err := r.opts.Store.Instance(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		if inst, ok := r.Get(id); ok {
			r.drop(inst)
			r.applied(id)
		}
		return nil
	}
	if err != nil {
		return err
	}
	r.applyRecord(rec)
	return nil
}

// resyncAll rereads every instance: added, changed and deleted ones.
func (r *Registry) resyncAll(ctx context.Context) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	recs, err := r.opts.Store.Instances(ctx)
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(recs))
	for _, rec := range recs {
		seen[rec.ID] = true
		r.applyRecord(rec)
	}
	for _, inst := range r.List() {
		if !seen[inst.id] {
			r.drop(inst)
			r.applied(inst.id)
		}
	}
	r.log.Debug("instances: resynced with the store", "instances", len(recs))
	return nil
}

// applyRecord brings the copy of one instance up to its stored record;
// writeMu is held. A record with another token is another incarnation of
// the id (deleted and created again): it replaces the copy. Otherwise
// only a newer revision is applied.
func (r *Registry) applyRecord(rec store.Instance) {
	cur, ok := r.Get(rec.ID)
	if ok && cur.tokenHash != rec.TokenHash {
		r.drop(cur)
		ok = false
	}
	if !ok {
		// Made elsewhere: never served here, whatever its home says.
		inst, err := r.fromRecord(rec, false)
		if err != nil {
			r.log.Error("instances: a record written by another replica cannot be read; leaving it out", "instance", rec.ID, "error", err.Error())
			return
		}
		r.mu.Lock()
		r.byID[rec.ID] = inst
		r.mu.Unlock()
		r.applied(rec.ID)
		return
	}
	cur.mu.Lock()
	defer cur.mu.Unlock()
	old := cur.state.Load()
	if rec.Rev <= old.rev {
		return
	}
	st, err := r.stateOf(rec, cur.served)
	if err != nil {
		r.log.Error("instances: overrides written by another replica cannot be read; keeping the last good ones", "instance", rec.ID, "error", err.Error())
		return
	}
	cur.state.Store(st)
	if old.local && !st.local {
		r.log.Warn("instances: another replica became the home of an instance served here; no longer serving it", "instance", rec.ID, "home", st.home)
		if r.opts.Gone != nil {
			r.opts.Gone(rec.ID)
		}
	}
	r.applied(rec.ID)
}

func (r *Registry) applied(id string) {
	r.changed(id)
	if r.opts.OnRemote != nil {
		r.opts.OnRemote(id)
	}
}
