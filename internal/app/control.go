package app

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/handlers/policy"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/proxy/control"
)

// controlBackend answers the control API from the server's parts.
type controlBackend struct{ s *App }

// apiError turns a registry error into the status and message the API
// shows. Registry messages name inputs, never secrets.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	status := instances.Status(err)
	if status == http.StatusServiceUnavailable {
		return &control.Error{Status: status, Msg: err.Error()} // "store unavailable: …"
	}
	if status >= 500 {
		return err // logged by the API, answered as "internal error"
	}
	return &control.Error{Status: status, Msg: err.Error()}
}

type statusView struct {
	OK     bool `json:"ok"`
	Script struct {
		Path       string  `json:"path"`
		Generation int     `json:"generation"`
		Error      *string `json:"error"`
		EnvError   *string `json:"envError"`
	} `json:"script"`
	Classes []string `json:"classes"`
	// OutboundHandlers names each class's outboundHandlers, for the web
	// page's handler switch. An addition to the contract, documented in docs/control-api.md.
	OutboundHandlers map[string][]string `json:"outboundHandlers"`
	Instances        int                 `json:"instances"`
	// LocalInstances are the instances this replica serves (all of them,
	// unless the store is shared by a fleet).
	LocalInstances int `json:"localInstances"`
	Proxy          struct {
		Listen    string `json:"listen"`
		Advertise string `json:"advertise"`
	} `json:"proxy"`
	Store storeView `json:"store"`
	Admin struct {
		Listen string `json:"listen"`
	} `json:"admin"`
}

func (b *controlBackend) Status() any {
	s := b.s
	st := s.reloader.Status()
	var v statusView
	v.OK = true
	v.Script.Path = st.Path
	v.Script.Generation = st.Generation
	if st.Err != nil {
		msg := st.Err.Error()
		v.Script.Error = &msg
	}
	if st.EnvErr != nil {
		msg := st.EnvErr.Error()
		v.Script.EnvError = &msg
	}
	v.Classes = []string{}
	v.OutboundHandlers = map[string][]string{}
	if gen, release := s.reloader.Acquire(); gen != nil {
		for _, c := range gen.Info.Classes {
			v.Classes = append(v.Classes, c.Name)
			v.OutboundHandlers[c.Name] = append([]string{}, c.Handlers...)
		}
		release()
	}
	v.Instances = s.registry.Len()
	v.LocalInstances = s.registry.LocalLen()
	v.Proxy.Listen = s.ProxyAddr().String()
	v.Proxy.Advertise = s.advertise
	v.Store = viewStore(s.storeHealth())
	v.Admin.Listen = s.AdminAddr().String()
	return v
}

func (b *controlBackend) CreateInstance(ctx context.Context, id, class string, sources []netip.Prefix) (control.Created, error) {
	return b.s.CreateInstance(ctx, id, class, sources...)
}

// CreateInstance creates an instance served by this replica, with its CA.
// The token appears only in the returned proxy URL, which names this
// replica's advertised address. Sources are the client ranges the
// transparent listener attributes to the instance.
func (s *App) CreateInstance(ctx context.Context, id, class string, sources ...netip.Prefix) (control.Created, error) {
	inst, token, err := s.registry.Create(ctx, id, class, sources...)
	if err != nil {
		return control.Created{}, apiError(err)
	}
	u := url.URL{Scheme: "http", User: url.UserPassword(inst.ID(), token), Host: s.advertise}
	attrs := []any{"instance", inst.ID(), "class", inst.Class()}
	if a, ok := s.cas.Get(inst.ID()); ok {
		attrs = append(attrs, "caNotAfter", a.NotAfter().UTC().Format(time.RFC3339))
	}
	s.log.Info("instance created", attrs...)
	return control.Created{ID: inst.ID(), Class: inst.Class(), ProxyURL: u.String(), CAPEM: string(inst.CACert())}, nil
}

func (b *controlBackend) ListInstances() []any {
	list := b.s.registry.List()
	out := make([]any, 0, len(list))
	for _, inst := range list {
		out = append(out, b.view(b.s.registry.View(inst)))
	}
	return out
}

// instance finds an instance of the fleet, reading through to a shared
// store for one created on another replica moments ago.
func (b *controlBackend) instance(id string) (*instances.Instance, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inst, err := b.s.registry.Lookup(ctx, id)
	if errors.Is(err, instances.ErrNotFound) {
		return nil, &control.Error{Status: 404, Msg: fmt.Sprintf("no instance %q", id)}
	}
	if err != nil {
		return nil, apiError(err)
	}
	return inst, nil
}

func (b *controlBackend) GetInstance(id string) (any, error) {
	inst, err := b.instance(id)
	if err != nil {
		return nil, err
	}
	return b.view(b.s.registry.View(inst)), nil
}

// view adds what the registry does not hold: the CA's expiry. For an
// instance another replica serves it is read from the shared certificate.
func (b *controlBackend) view(v instances.View) instances.View {
	if a, ok := b.s.cas.Get(v.ID); ok {
		t := a.NotAfter().UTC()
		v.CANotAfter = &t
		return v
	}
	if inst, ok := b.s.registry.Get(v.ID); ok {
		if blk, _ := pem.Decode(inst.CACert()); blk != nil {
			if cert, err := x509.ParseCertificate(blk.Bytes); err == nil {
				t := cert.NotAfter.UTC()
				v.CANotAfter = &t
			}
		}
	}
	return v
}

// DeleteInstance removes the instance, its token, its CA key, its trace and
// every connection it has open: here at once (the registry's Gone hook),
// and on its home when the change reaches it.
func (b *controlBackend) DeleteInstance(ctx context.Context, id string) error {
	if err := b.s.registry.Delete(ctx, id); err != nil {
		return apiError(err)
	}
	b.s.log.Info("instance deleted", "instance", id)
	return nil
}

// CAPEM answers for any instance of the fleet: the certificate is in the
// store, the key only on the home.
func (b *controlBackend) CAPEM(id string) ([]byte, error) {
	inst, err := b.instance(id)
	if err != nil {
		return nil, err
	}
	pem := inst.CACert()
	if pem == nil {
		return nil, &control.Error{Status: 404, Msg: fmt.Sprintf("no CA for instance %q", id)}
	}
	return pem, nil
}

// HAR is kept by the replica that carried the traffic: the home.
func (b *controlBackend) HAR(id string) ([]byte, error) {
	inst, err := b.instance(id)
	if err != nil {
		return nil, err
	}
	if !inst.Local() {
		return nil, &control.Error{Status: http.StatusMisdirectedRequest,
			Msg: fmt.Sprintf("instance %q is served by the replica at %s; its traffic is recorded there: ask that replica's control API", id, inst.Home())}
	}
	return b.s.har.HAR(id)
}

func (b *controlBackend) Call(ctx context.Context, id, method string, args []json.RawMessage) (any, error) {
	v, err := b.s.registry.Call(ctx, id, method, args)
	if err != nil {
		return nil, apiError(err)
	}
	return b.view(v), nil
}

// Explain decides a URL for the instance as its live traffic is decided.
func (b *controlBackend) Explain(_ context.Context, id, rawURL string) (any, error) {
	inst, err := b.instance(id)
	if err != nil {
		return nil, err
	}
	e, err := b.s.svc.Explain(inst, rawURL)
	switch {
	case errors.Is(err, policy.ErrBadURL):
		return nil, &control.Error{Status: http.StatusBadRequest, Msg: err.Error()}
	case errors.Is(err, policy.ErrNoScript):
		return nil, &control.Error{Status: http.StatusServiceUnavailable, Msg: err.Error()}
	case err != nil:
		return nil, err
	}
	return e, nil
}

// storeView is the store's health in /v1/status.
type storeView struct {
	Backend string     `json:"backend"`
	Addr    string     `json:"addr,omitempty"`
	Up      bool       `json:"up"`
	Error   *string    `json:"error"`
	Since   *time.Time `json:"since,omitempty"`
	// Resyncs counts full rereads after the change feed reconnected.
	Resyncs   uint64 `json:"resyncs"`
	ClaimLost bool   `json:"homeClaimLost,omitempty"`
}

func viewStore(h store.Health) storeView {
	v := storeView{Backend: h.Backend, Addr: h.Addr, Up: h.Up, Resyncs: h.Resyncs, ClaimLost: h.ClaimLost}
	if h.Err != "" {
		msg := h.Err
		v.Error = &msg
	}
	if !h.Since.IsZero() {
		since := h.Since.UTC()
		v.Since = &since
	}
	return v
}

func (b *controlBackend) KV(binding string) (store.KV, bool) {
	for _, name := range b.s.cfg.KV {
		if name == binding {
			return b.s.store.KV(binding), true
		}
	}
	return nil, false
}
