// Package redis is the store a fleet shares: instances, overrides and KV
// data in one Redis (redis:// or rediss://), and a change feed on Redis
// pub/sub that tells every replica about every other replica's writes.
//
// Each write is one atomic step on the server (a Lua script or a
// MULTI/EXEC block) that also publishes its change, so a change is never
// announced without being committed, nor committed without being
// announced to whoever is subscribed. A replica whose feed drops
// reconnects with backoff and reports a store.Resync, since messages sent
// while it was away are gone: subscribers reread everything.
//
// Nothing secret is written: instance tokens only as SHA-256 hashes, CA
// certificates but never their keys, no env values.
package redis

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbound-dev/outbound/internal/store"
)

// Defaults for Options fields left zero.
const (
	DefaultPrefix      = "outbound:"
	DefaultConnectWait = 30 * time.Second
	DefaultOpTimeout   = 3 * time.Second
	// ClaimTTL is how long a home claim outlives the process that held it.
	ClaimTTL = 5 * time.Second
	// pingEvery is how often an idle change feed checks its connection.
	pingEvery = time.Second
)

// Options configure Open.
type Options struct {
	// URL is redis://[USER:PASS@]HOST:PORT/DB or rediss://… (TLS). The
	// query may hold go-redis's options, and tls_ca=PATH for a PEM file of
	// roots to verify a rediss:// server with instead of the system's.
	URL    string
	Logger *slog.Logger
	// Prefix starts every key and the change channel; DefaultPrefix.
	Prefix string
	// ConnectWait is how long Open keeps trying to reach the server.
	ConnectWait time.Duration
	// OpTimeout bounds one round trip, so a partitioned server fails a
	// call instead of hanging it.
	OpTimeout time.Duration
	// SweepEvery is how often KV index entries of expired keys are
	// reclaimed; 0 means every 5 minutes, negative never.
	SweepEvery time.Duration
}

// Store is the Redis store.Store.
type Store struct {
	c      *goredis.Client
	opts   Options
	log    *slog.Logger
	addr   string // host:port/db, for messages; never credentials
	origin string // tags this process's messages, so it skips its own
	keys   keys

	// Subscribers implements Subscribe.
	store.Subscribers

	health healthState
	cache  *lastKnown

	claimMu sync.Mutex
	claim   string // home claimed, or ""

	feedMu sync.Mutex
	feedPS *goredis.PubSub // the feed's current subscription, closed by Close to end a blocked read

	// loop lives until Close; the feed, the sweeper and the claim's
	// renewal run under it.
	loop   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Shared = (*Store)(nil)
)

// keys names everything the store writes.
type keys struct{ p string }

func (k keys) instance(id string) string { return k.p + "i:" + id }
func (k keys) ids() string               { return k.p + "ids" }
func (k keys) channel() string           { return k.p + "changes" }
func (k keys) claim(home string) string  { return k.p + "home:" + home }
func (k keys) kvIndex(binding string) string {
	return k.p + "kvi:" + escBinding(binding)
}
func (k keys) kvPrefix(binding string) string { return k.p + "kv:" + escBinding(binding) + ":" }

// escBinding keeps a binding name from running into the key after it.
func escBinding(b string) string {
	return strings.NewReplacer("%", "%25", ":", "%3A").Replace(b)
}

// ParseURL checks a store URL and returns go-redis options for it, and
// the address to name in messages (no credentials). Its errors never
// show a password.
func ParseURL(raw string) (*goredis.Options, string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return nil, "", fmt.Errorf("bad Redis URL %s: want redis://[USER:PASS@]HOST:PORT/DB or rediss://…", redact(raw))
	}
	q := u.Query()
	caFile := q.Get("tls_ca")
	q.Del("tls_ca")
	u.RawQuery = q.Encode()
	o, err := goredis.ParseURL(u.String())
	if err != nil {
		msg := err.Error()
		if pass, ok := u.User.Password(); ok && pass != "" {
			msg = strings.ReplaceAll(msg, pass, "xxxxx")
		}
		return nil, "", fmt.Errorf("bad Redis URL %s: %s", redact(raw), msg)
	}
	if caFile != "" {
		if o.TLSConfig == nil {
			return nil, "", fmt.Errorf("bad Redis URL %s: tls_ca needs rediss://", redact(raw))
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, "", fmt.Errorf("reading the Redis tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("the Redis tls_ca %s holds no PEM certificate", caFile)
		}
		o.TLSConfig.RootCAs = pool
	}
	return o, fmt.Sprintf("%s://%s/%d", u.Scheme, o.Addr, o.DB), nil
}

// redact shows a URL for messages: with its password masked when it
// parses as one with a host, else not at all.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "(not a URL)"
	}
	return u.Redacted()
}

// Open connects to the server, waiting up to ConnectWait for it, and
// subscribes to the change feed before it returns, so no write made after
// Open is missed.
func Open(ctx context.Context, opts Options) (*Store, error) {
	o, addr, err := ParseURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.ConnectWait <= 0 {
		opts.ConnectWait = DefaultConnectWait
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	if opts.SweepEvery == 0 {
		opts.SweepEvery = 5 * time.Minute
	}
	setLogger(opts.Logger)
	// Retries are ours to decide: a retried create whose first reply was
	// lost would answer "exists" for the caller's own instance.
	o.MaxRetries = -1
	o.DialTimeout = opts.OpTimeout
	o.ReadTimeout = opts.OpTimeout
	o.WriteTimeout = opts.OpTimeout
	o.ContextTimeoutEnabled = true
	o.DisableIdentity = true
	var origin [8]byte
	rand.Read(origin[:])
	s := &Store{
		c: goredis.NewClient(o), opts: opts, log: opts.Logger.With("store", addr), addr: addr,
		origin: hex.EncodeToString(origin[:]), keys: keys{opts.Prefix},
		cache: newLastKnown(),
	}
	s.health.init(addr, s.log)
	s.loop, s.cancel = context.WithCancel(context.Background())
	if err := s.connect(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.checkPersistence(ctx)

	subscribed := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.feed(s.loop, subscribed)
	}()
	select {
	case err := <-subscribed:
		if err != nil {
			s.Close()
			return nil, err
		}
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	if opts.SweepEvery > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.sweepLoop(s.loop)
		}()
	}
	return s, nil
}

// connect pings until the server answers, for up to ConnectWait. A refusal
// that waiting cannot fix (bad password, no such database) fails at once.
func (s *Store) connect(ctx context.Context) error {
	deadline := time.Now().Add(s.opts.ConnectWait)
	wait := 100 * time.Millisecond
	for {
		err := s.c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !unavailable(err) {
			return fmt.Errorf("the Redis server at %s refused the connection: %v", s.addr, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: Redis at %s: %v (tried for %s)", store.ErrUnavailable, s.addr, err, s.opts.ConnectWait)
		}
		s.log.Warn("store: Redis not reachable yet; retrying", "error", err.Error(), "retry_in", wait.String())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// checkPersistence warns when the server would lose acknowledged writes
// on a restart. Servers that refuse CONFIG (managed services, ACLs) are
// the operator's to check.
func (s *Store) checkPersistence(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.OpTimeout)
	defer cancel()
	cfg, err := s.c.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		s.log.Info("store: cannot read the Redis persistence settings; make sure it runs with appendonly yes", "error", err.Error())
		return
	}
	if cfg["appendonly"] != "yes" {
		s.log.Warn("store: Redis runs without appendonly: writes acknowledged since its last snapshot are lost if it restarts; run it with --appendonly yes --appendfsync always")
		return
	}
	if f, _ := s.c.ConfigGet(ctx, "appendfsync").Result(); f["appendfsync"] != "always" {
		s.log.Info("store: Redis appendfsync is not always: a crash of the Redis host may lose up to a second of acknowledged writes", "appendfsync", f["appendfsync"])
	}
}

// Close stops the feed and the claim and closes the connections.
func (s *Store) Close() error {
	var err error
	s.closed.Do(func() {
		s.cancel()
		s.feedMu.Lock()
		if s.feedPS != nil {
			s.feedPS.Close()
		}
		s.feedMu.Unlock()
		s.wg.Wait()
		s.releaseClaim()
		err = s.c.Close()
	})
	return err
}

// Addr is where the store is, without credentials.
func (s *Store) Addr() string { return s.addr }

// unavailable reports whether err means the server could not be reached or
// cannot serve right now, as opposed to refusing the command.
func unavailable(err error) bool {
	if err == nil || badTLS(err) {
		return false
	}
	var re goredis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true // network errors, timeouts, a closed pool
}

// badTLS reports a TLS failure that waiting cannot fix: a certificate
// that does not verify, or a server that does not speak TLS.
func badTLS(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) ||
		errors.As(err, &invalid) || errors.As(err, &record)
}

// fail wraps a command's error. The caller's own cancellation stays
// context.Canceled; a server out of reach becomes store.ErrUnavailable and
// marks the store down.
func (s *Store) fail(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
		return fmt.Errorf("%s: %w", what, cerr)
	}
	if unavailable(err) {
		s.health.down(err)
		return fmt.Errorf("%w: Redis at %s: %s: %v", store.ErrUnavailable, s.addr, what, err)
	}
	return fmt.Errorf("%s: Redis: %w", what, err)
}

// op bounds one call by OpTimeout on top of the caller's context.
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.OpTimeout)
}

// message is one change on the feed. Binding and key are bytes, so any
// KV key survives JSON.
type message struct {
	Origin  string           `json:"o"`
	Kind    store.ChangeKind `json:"k"`
	ID      []byte           `json:"i,omitempty"`
	Binding []byte           `json:"b,omitempty"`
	Key     []byte           `json:"y,omitempty"`
}

func (s *Store) encode(c store.Change) string {
	m := message{Origin: s.origin, Kind: c.Kind, ID: []byte(c.ID)}
	if c.Kind == store.KVChanged {
		m.Binding, m.Key = []byte(c.Binding), []byte(c.Key)
	}
	b, _ := json.Marshal(m) // plain fields: cannot fail
	return string(b)
}

// ---- instances ----

// Instance records are hashes with these fields.
const (
	fClass   = "class"
	fToken   = "tokenSha256"
	fCreated = "created"
	fHome    = "home"
	fCA      = "caCert"
	fOv      = "overrides"
	fRev     = "rev"
	fSources = "sources" // JSON array of CIDR strings, or ""
)

func decodeInstance(id string, h map[string]string) (store.Instance, error) {
	inst := store.Instance{ID: id, Class: h[fClass], Home: h[fHome]}
	tok, err := hex.DecodeString(h[fToken])
	if err != nil || len(tok) != len(inst.TokenHash) {
		return inst, fmt.Errorf("instance %q: bad token hash", id)
	}
	copy(inst.TokenHash[:], tok)
	if inst.Created, err = time.Parse(time.RFC3339Nano, h[fCreated]); err != nil {
		return inst, fmt.Errorf("instance %q: bad creation time: %w", id, err)
	}
	if inst.Rev, err = strconv.ParseUint(h[fRev], 10, 64); err != nil {
		return inst, fmt.Errorf("instance %q: bad revision: %w", id, err)
	}
	if v := h[fCA]; v != "" {
		inst.CACert = []byte(v)
	}
	if v := h[fOv]; v != "" {
		inst.Overrides = json.RawMessage(v)
	}
	if v := h[fSources]; v != "" {
		var l []string
		if err := json.Unmarshal([]byte(v), &l); err != nil {
			return inst, fmt.Errorf("instance %q: bad sources: %w", id, err)
		}
		for _, src := range l {
			p, err := netip.ParsePrefix(src)
			if err != nil {
				return inst, fmt.Errorf("instance %q: source %q: %w", id, src, err)
			}
			inst.Sources = append(inst.Sources, p)
		}
	}
	return inst, nil
}

// Instances implements store.Store.
func (s *Store) Instances(ctx context.Context) ([]store.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	octx, cancel := s.op(ctx)
	defer cancel()
	ids, err := s.c.ZRange(octx, s.keys.ids(), 0, -1).Result()
	if err != nil {
		return nil, s.fail(ctx, "list instances", err)
	}
	out := make([]store.Instance, 0, len(ids))
	const batch = 256
	for start := 0; start < len(ids); start += batch {
		part := ids[start:min(start+batch, len(ids))]
		cmds := make([]*goredis.MapStringStringCmd, len(part))
		_, err := s.c.Pipelined(octx, func(p goredis.Pipeliner) error {
			for i, id := range part {
				cmds[i] = p.HGetAll(octx, s.keys.instance(id))
			}
			return nil
		})
		if err != nil {
			return nil, s.fail(ctx, "read instances", err)
		}
		for i, id := range part {
			h := cmds[i].Val()
			if len(h) == 0 {
				continue // deleted since the listing
			}
			inst, err := decodeInstance(id, h)
			if err != nil {
				return nil, fmt.Errorf("read instances: %w", err)
			}
			out = append(out, inst)
		}
	}
	return out, nil
}

// Instance implements store.Store.
func (s *Store) Instance(ctx context.Context, id string) (store.Instance, error) {
	if err := ctx.Err(); err != nil {
		return store.Instance{}, err
	}
	octx, cancel := s.op(ctx)
	defer cancel()
	h, err := s.c.HGetAll(octx, s.keys.instance(id)).Result()
	if err != nil {
		return store.Instance{}, s.fail(ctx, "read instance "+id, err)
	}
	if len(h) == 0 {
		return store.Instance{}, fmt.Errorf("read instance %s: %w", id, store.ErrNotFound)
	}
	return decodeInstance(id, h)
}

var createScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'class', ARGV[2], 'tokenSha256', ARGV[3], 'created', ARGV[4],
	'home', ARGV[5], 'caCert', ARGV[6], 'overrides', ARGV[7], 'sources', ARGV[10], 'rev', 1)
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('PUBLISH', ARGV[8], ARGV[9])
return 1`)

// CreateInstance implements store.Store. Two replicas creating one id at
// once: the script runs whole, so exactly one of them finds it free.
func (s *Store) CreateInstance(ctx context.Context, inst store.Instance) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(inst.Overrides) > 0 && !json.Valid(inst.Overrides) {
		return fmt.Errorf("create instance %s: overrides are not JSON", inst.ID)
	}
	ch := store.Change{Kind: store.InstanceCreated, ID: inst.ID}
	octx, cancel := s.op(ctx)
	defer cancel()
	n, err := createScript.Run(octx, s.c, []string{s.keys.instance(inst.ID), s.keys.ids()},
		inst.ID, inst.Class, hex.EncodeToString(inst.TokenHash[:]), inst.Created.UTC().Format(time.RFC3339Nano),
		inst.Home, string(inst.CACert), string(inst.Overrides), s.keys.channel(), s.encode(ch), sourcesJSON(inst.Sources)).Int()
	if err != nil {
		return s.fail(ctx, "create instance "+inst.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("create instance %s: %w", inst.ID, store.ErrExists)
	}
	s.Notify(ch)
	return nil
}

// sourcesJSON is the stored form of an instance's source ranges.
func sourcesJSON(l []netip.Prefix) string {
	if len(l) == 0 {
		return ""
	}
	strs := make([]string, len(l))
	for i, p := range l {
		strs[i] = p.String()
	}
	b, _ := json.Marshal(strs) // strings: cannot fail
	return string(b)
}

var deleteScript = goredis.NewScript(`
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`)

// DeleteInstance implements store.Store.
func (s *Store) DeleteInstance(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := store.Change{Kind: store.InstanceDeleted, ID: id}
	octx, cancel := s.op(ctx)
	defer cancel()
	n, err := deleteScript.Run(octx, s.c, []string{s.keys.instance(id), s.keys.ids()}, id, s.keys.channel(), s.encode(ch)).Int()
	if err != nil {
		return s.fail(ctx, "delete instance "+id, err)
	}
	if n == 0 {
		return fmt.Errorf("delete instance %s: %w", id, store.ErrNotFound)
	}
	s.Notify(ch)
	return nil
}

// setFieldsScript writes fields of an instance if its revision is still
// ARGV[1], bumps the revision and publishes.
// Returns the new revision, -1 for no such instance, -2 for a conflict.
var setFieldsScript = goredis.NewScript(`
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return -2 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
local n = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n`)

// setFields runs setFieldsScript: the write happens only at revision expect.
func (s *Store) setFields(ctx context.Context, what string, ch store.Change, expect string, fields ...string) (int64, error) {
	octx, cancel := s.op(ctx)
	defer cancel()
	args := []any{expect, s.keys.channel(), s.encode(ch)}
	for _, f := range fields {
		args = append(args, f)
	}
	n, err := setFieldsScript.Run(octx, s.c, []string{s.keys.instance(ch.ID)}, args...).Int64()
	if err != nil {
		return 0, s.fail(ctx, what, err)
	}
	if n == -1 {
		return 0, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return n, nil
}

// maxUpdateTries bounds optimistic retries; each loss means another
// writer committed, so running out takes sustained contention.
const maxUpdateTries = 100

// UpdateOverrides implements store.Store with optimistic concurrency: read
// the record and its revision, apply fn, and write only if the revision
// is unchanged; otherwise read again.
func (s *Store) UpdateOverrides(ctx context.Context, id string, fn func(json.RawMessage) (json.RawMessage, error)) (store.Instance, error) {
	what := "save overrides of " + id
	for try := 0; try < maxUpdateTries; try++ {
		cur, err := s.Instance(ctx, id)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return store.Instance{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
			}
			return store.Instance{}, err
		}
		next, err := fn(cur.Overrides)
		if err != nil {
			return store.Instance{}, err
		}
		if !json.Valid(next) {
			return store.Instance{}, fmt.Errorf("%s: not JSON", what)
		}
		ch := store.Change{Kind: store.OverridesChanged, ID: id}
		rev, err := s.setFields(ctx, what, ch, strconv.FormatUint(cur.Rev, 10), fOv, string(next))
		if err != nil {
			return store.Instance{}, err
		}
		if rev == -2 {
			continue
		}
		cur.Overrides, cur.Rev = append(json.RawMessage(nil), next...), uint64(rev)
		s.Notify(ch)
		return cur, nil
	}
	return store.Instance{}, fmt.Errorf("%s: %d concurrent writers won in a row; giving up", what, maxUpdateTries)
}

// setHomeScript writes home and certificate, bumps the revision, publishes
// and returns the record as written (HGETALL), or an empty list for no
// such instance.
var setHomeScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HSET', KEYS[1], 'home', ARGV[1], 'caCert', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return redis.call('HGETALL', KEYS[1])`)

// SetHome implements store.Store. The record comes back from the same
// script: a read after it could see a later write, or none at all.
func (s *Store) SetHome(ctx context.Context, id, home string, caCert []byte) (store.Instance, error) {
	if err := ctx.Err(); err != nil {
		return store.Instance{}, err
	}
	what := "set home of " + id
	ch := store.Change{Kind: store.HomeChanged, ID: id}
	octx, cancel := s.op(ctx)
	defer cancel()
	kv, err := setHomeScript.Run(octx, s.c, []string{s.keys.instance(id)}, home, string(caCert), s.keys.channel(), s.encode(ch)).StringSlice()
	if err != nil {
		return store.Instance{}, s.fail(ctx, what, err)
	}
	if len(kv) == 0 {
		return store.Instance{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	s.Notify(ch) // committed, whatever the decoding below says
	h := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = kv[i+1]
	}
	inst, err := decodeInstance(id, h)
	if err != nil {
		return store.Instance{}, fmt.Errorf("%s: %w", what, err)
	}
	return inst, nil
}

// ---- home claims ----

var refreshClaimScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0`)

var releaseClaimScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// ClaimHome implements store.Shared. The claim is a key holding this
// process's origin with a ClaimTTL expiry, renewed every ClaimTTL/5. A
// claim that is held and renewed by someone else for longer than a
// lapse would take is another live replica with the same --advertise.
func (s *Store) ClaimHome(ctx context.Context, home string) error {
	key := s.keys.claim(home)
	deadline := time.Now().Add(ClaimTTL + 2*time.Second)
	logged := false
	for {
		octx, cancel := s.op(ctx)
		ok, err := s.c.SetNX(octx, key, s.origin, ClaimTTL).Result()
		cancel()
		if err != nil {
			return s.fail(ctx, "claim home "+home, err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another live replica serves as home %s (its claim in Redis keeps being renewed): give each replica its own --advertise", home)
		}
		if !logged {
			s.log.Warn("store: waiting for the claim on this home to lapse: a replica with the same --advertise still runs, or was killed in the last few seconds", "home", home, "lapses_within", ClaimTTL.String())
			logged = true
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.claimMu.Lock()
	s.claim = home
	s.claimMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.keepClaim(home)
	}()
	return nil
}

// keepClaim renews the claim until Close. An outage longer than ClaimTTL
// lets it lapse; the first renewal after takes it again unless someone
// else has.
func (s *Store) keepClaim(home string) {
	key := s.keys.claim(home)
	t := time.NewTicker(ClaimTTL / 5)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.loop.Done():
			return
		}
		octx, cancel := s.op(s.loop)
		n, err := refreshClaimScript.Run(octx, s.c, []string{key}, s.origin, ClaimTTL.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			if unavailable(err) {
				s.health.down(err)
			}
		case n == 0:
			if s.health.claimLost(true) {
				s.log.Error("store: another process now holds this replica's home claim: two replicas advertise the same address, and sandboxes of its instances may get the wrong CA", "home", home)
			}
		default:
			if s.health.claimLost(false) {
				s.log.Info("store: home claim held again", "home", home)
			}
		}
	}
}

func (s *Store) releaseClaim() {
	s.claimMu.Lock()
	home := s.claim
	s.claimMu.Unlock()
	if home == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
	defer cancel()
	releaseClaimScript.Run(ctx, s.c, []string{s.keys.claim(home)}, s.origin)
}

// Health implements store.Shared.
func (s *Store) Health() store.Health { return s.health.get() }

// isTimeout reports a read deadline passing, as opposed to a failure.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
