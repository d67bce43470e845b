// Package bolt is the embedded store: one bbolt file in the state
// directory, fsynced on every commit.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/outbound-dev/outbound/internal/store"
)

// File is the name of the database inside the state directory.
const File = "outbound.db"

var (
	bucketInstances = []byte("instances")
	bucketOverrides = []byte("overrides")
	bucketKV        = []byte("kv") // one nested bucket per binding
)

// Bolt is the embedded store.Store.
type Bolt struct {
	db   *bolt.DB
	path string
	now  func() time.Time
	// Subscribers implements Subscribe.
	store.Subscribers
}

var _ store.Store = (*Bolt)(nil)

// Open opens (creating if needed) the database File in dir. It fails
// rather than waits when another process holds the database, with an error
// that wraps ErrInUse and names the state dir and that process.
func Open(dir string) (*Bolt, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	b, err := OpenFile(filepath.Join(dir, File))
	var held *inUseError
	if errors.As(err, &held) {
		held.what = "state dir " + dir
	}
	return b, err
}

// OpenFile opens (creating if needed) the database at path, creating its
// directory if needed. It fails rather than waits when another process
// holds the database, with an error that wraps ErrInUse.
func OpenFile(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create store directory for %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, inUse(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := writeOwner(path); err != nil {
		db.Close()
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketInstances, bucketOverrides, bucketKV} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		removeOwner(path)
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return &Bolt{db: db, path: path, now: time.Now}, nil
}

// Close closes the database.
func (s *Bolt) Close() error {
	removeOwner(s.path)
	return s.db.Close()
}

// instanceRecord is the on-disk form of an instance. Records written
// before Home, CACert and Rev existed read back with them empty.
type instanceRecord struct {
	ID        string    `json:"id"`
	Class     string    `json:"class"`
	TokenHash string    `json:"tokenSha256"`
	Created   time.Time `json:"created"`
	Sources   []string  `json:"sources,omitempty"`
	Home      string    `json:"home,omitempty"`
	CACert    string    `json:"caCert,omitempty"`
	Rev       uint64    `json:"rev,omitempty"`
}

func decodeInstance(k, v, ov []byte) (store.Instance, error) {
	var r instanceRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return store.Instance{}, fmt.Errorf("instance %q: %w", k, err)
	}
	inst := store.Instance{ID: r.ID, Class: r.Class, Created: r.Created, Home: r.Home, Rev: max(r.Rev, 1)}
	if r.CACert != "" {
		inst.CACert = []byte(r.CACert)
	}
	h, err := hex.DecodeString(r.TokenHash)
	if err != nil || len(h) != len(inst.TokenHash) {
		return store.Instance{}, fmt.Errorf("instance %q: bad token hash", k)
	}
	copy(inst.TokenHash[:], h)
	for _, src := range r.Sources {
		p, err := netip.ParsePrefix(src)
		if err != nil {
			return store.Instance{}, fmt.Errorf("instance %q: source %q: %w", k, src, err)
		}
		inst.Sources = append(inst.Sources, p)
	}
	if ov != nil {
		inst.Overrides = bytes.Clone(ov)
	}
	return inst, nil
}

func encodeInstance(inst store.Instance) ([]byte, error) {
	r := instanceRecord{
		ID: inst.ID, Class: inst.Class, TokenHash: hex.EncodeToString(inst.TokenHash[:]), Created: inst.Created.UTC(),
		Home: inst.Home, CACert: string(inst.CACert), Rev: inst.Rev,
	}
	for _, p := range inst.Sources {
		r.Sources = append(r.Sources, p.String())
	}
	return json.Marshal(r)
}

// Instances implements store.Store.
func (s *Bolt) Instances(ctx context.Context) ([]store.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []store.Instance
	err := s.db.View(func(tx *bolt.Tx) error {
		ov := tx.Bucket(bucketOverrides)
		return tx.Bucket(bucketInstances).ForEach(func(k, v []byte) error {
			inst, err := decodeInstance(k, v, ov.Get(k))
			if err != nil {
				return err
			}
			out = append(out, inst)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read instances: %w", err)
	}
	return out, nil
}

// Instance implements store.Store.
func (s *Bolt) Instance(ctx context.Context, id string) (store.Instance, error) {
	if err := ctx.Err(); err != nil {
		return store.Instance{}, err
	}
	var inst store.Instance
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		inst, err = getInstance(tx, id)
		return err
	})
	if err != nil {
		return store.Instance{}, fmt.Errorf("read instance %s: %w", id, err)
	}
	return inst, nil
}

func getInstance(tx *bolt.Tx, id string) (store.Instance, error) {
	v := tx.Bucket(bucketInstances).Get([]byte(id))
	if v == nil {
		return store.Instance{}, store.ErrNotFound
	}
	return decodeInstance([]byte(id), v, tx.Bucket(bucketOverrides).Get([]byte(id)))
}

// bump writes inst back with its revision one higher.
func bump(tx *bolt.Tx, inst *store.Instance) error {
	inst.Rev++
	rec, err := encodeInstance(*inst)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketInstances).Put([]byte(inst.ID), rec)
}

// CreateInstance implements store.Store.
func (s *Bolt) CreateInstance(ctx context.Context, inst store.Instance) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	inst.Rev = 1
	rec, err := encodeInstance(inst)
	if err != nil {
		return err
	}
	ov := inst.Overrides
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInstances)
		if b.Get([]byte(inst.ID)) != nil {
			return fmt.Errorf("%w: %s", store.ErrExists, inst.ID)
		}
		if err := b.Put([]byte(inst.ID), rec); err != nil {
			return err
		}
		if len(ov) > 0 {
			return tx.Bucket(bucketOverrides).Put([]byte(inst.ID), ov)
		}
		return tx.Bucket(bucketOverrides).Delete([]byte(inst.ID))
	})
	if err != nil {
		return fmt.Errorf("create instance %s: %w", inst.ID, err)
	}
	s.Notify(store.Change{Kind: store.InstanceCreated, ID: inst.ID})
	return nil
}

// DeleteInstance implements store.Store.
func (s *Bolt) DeleteInstance(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketInstances)
		if b.Get([]byte(id)) == nil {
			return store.ErrNotFound
		}
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bucketOverrides).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete instance %s: %w", id, err)
	}
	s.Notify(store.Change{Kind: store.InstanceDeleted, ID: id})
	return nil
}

// UpdateOverrides implements store.Store: one bbolt write transaction, so
// nothing interleaves.
func (s *Bolt) UpdateOverrides(ctx context.Context, id string, fn func(json.RawMessage) (json.RawMessage, error)) (store.Instance, error) {
	return s.rewrite(ctx, id, "save overrides of", store.OverridesChanged, func(tx *bolt.Tx, inst *store.Instance) error {
		next, err := fn(inst.Overrides)
		if err != nil {
			return err
		}
		if !json.Valid(next) {
			return fmt.Errorf("not JSON")
		}
		inst.Overrides = bytes.Clone(next)
		return tx.Bucket(bucketOverrides).Put([]byte(id), inst.Overrides)
	})
}

// SetHome implements store.Store.
func (s *Bolt) SetHome(ctx context.Context, id, home string, caCert []byte) (store.Instance, error) {
	return s.rewrite(ctx, id, "set home of", store.HomeChanged, func(_ *bolt.Tx, inst *store.Instance) error {
		inst.Home, inst.CACert = home, bytes.Clone(caCert)
		return nil
	})
}

// rewrite changes one instance in one write transaction, bumps its
// revision and announces the change.
func (s *Bolt) rewrite(ctx context.Context, id, what string, kind store.ChangeKind, fn func(tx *bolt.Tx, inst *store.Instance) error) (store.Instance, error) {
	if err := ctx.Err(); err != nil {
		return store.Instance{}, err
	}
	var inst store.Instance
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if inst, err = getInstance(tx, id); err != nil {
			return err
		}
		if err := fn(tx, &inst); err != nil {
			return err
		}
		return bump(tx, &inst)
	})
	if err != nil {
		return store.Instance{}, fmt.Errorf("%s %s: %w", what, id, err)
	}
	s.Notify(store.Change{Kind: kind, ID: id})
	return inst, nil
}

// KV implements store.Store.
func (s *Bolt) KV(binding string) store.KV { return &boltKV{s: s, name: []byte(binding)} }

// Sweep deletes expired KV entries of every binding. Reads already hide
// them; sweeping only reclaims space.
func (s *Bolt) Sweep(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := s.now()
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKV).ForEachBucket(func(name []byte) error {
			b := tx.Bucket(bucketKV).Bucket(name)
			var dead [][]byte
			err := b.ForEach(func(k, v []byte) error {
				if expired(v, now) {
					dead = append(dead, bytes.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range dead {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			n += len(dead)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("sweep expired KV entries: %w", err)
	}
	return n, nil
}

// A KV value on disk is 8 bytes of expiry (Unix nanoseconds, big endian,
// 0 for never) followed by the value.
const kvHeader = 8

func expired(v []byte, now time.Time) bool {
	if len(v) < kvHeader {
		return true // not ours; hide it
	}
	exp := int64(binary.BigEndian.Uint64(v))
	return exp != 0 && now.UnixNano() >= exp
}

type boltKV struct {
	s    *Bolt
	name []byte
}

func (k *boltKV) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	var out []byte
	now := k.s.now()
	err := k.s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket(k.name)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(key))
		if v == nil || expired(v, now) {
			return nil
		}
		out = bytes.Clone(v[kvHeader:])
		if out == nil {
			out = []byte{}
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("KV %s get: %w", k.name, err)
	}
	return out, out != nil, nil
}

func (k *boltKV) Put(ctx context.Context, key string, value []byte, expires time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.CheckKey(key); err != nil {
		return err
	}
	v := make([]byte, kvHeader+len(value))
	if !expires.IsZero() {
		binary.BigEndian.PutUint64(v, uint64(expires.UnixNano()))
	}
	copy(v[kvHeader:], value)
	err := k.s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketKV).CreateBucketIfNotExists(k.name)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), v)
	})
	if err != nil {
		return fmt.Errorf("KV %s put: %w", k.name, err)
	}
	k.s.Notify(store.Change{Kind: store.KVChanged, Binding: string(k.name), Key: key})
	return nil
}

func (k *boltKV) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := k.s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket(k.name)
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("KV %s delete: %w", k.name, err)
	}
	k.s.Notify(store.Change{Kind: store.KVChanged, Binding: string(k.name), Key: key})
	return nil
}

// List implements store.KV. The cursor is the last key of the previous page.
func (k *boltKV) List(ctx context.Context, prefix, cursor string, limit int) ([]string, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	limit = store.PageSize(limit)
	var keys []string
	next := ""
	now := k.s.now()
	err := k.s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket(k.name)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		p := []byte(prefix)
		var kk, v []byte
		if cursor != "" && cursor >= prefix {
			kk, v = c.Seek([]byte(cursor))
			if kk != nil && string(kk) == cursor {
				kk, v = c.Next()
			}
		} else {
			kk, v = c.Seek(p)
		}
		for ; kk != nil && bytes.HasPrefix(kk, p); kk, v = c.Next() {
			if expired(v, now) {
				continue
			}
			if len(keys) == limit {
				next = keys[len(keys)-1]
				return nil
			}
			keys = append(keys, string(kk))
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("KV %s list: %w", k.name, err)
	}
	return keys, next, nil
}
