package app

import (
	"context"
	"encoding/json"
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
	// page's handler switch. An addition to interfaces.md.
	OutboundHandlers map[string][]string `json:"outboundHandlers"`
	Instances        int                 `json:"instances"`
	Proxy            struct {
		Listen string `json:"listen"`
	} `json:"proxy"`
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
	v.Proxy.Listen = s.ProxyAddr().String()
	v.Admin.Listen = s.AdminAddr().String()
	return v
}

func (b *controlBackend) CreateInstance(ctx context.Context, id, class string, sources []netip.Prefix) (control.Created, error) {
	return b.s.CreateInstance(ctx, id, class, sources...)
}

// CreateInstance creates an instance and its CA. The token appears only in
// the returned proxy URL. Sources are the client ranges the transparent
// listener attributes to the instance.
func (s *App) CreateInstance(ctx context.Context, id, class string, sources ...netip.Prefix) (control.Created, error) {
	inst, token, err := s.registry.Create(ctx, id, class, sources...)
	if err != nil {
		return control.Created{}, apiError(err)
	}
	authority, err := s.cas.Add(inst.ID())
	if err != nil {
		s.registry.Delete(ctx, inst.ID())
		return control.Created{}, fmt.Errorf("CA for instance %q: %w", inst.ID(), err)
	}
	u := url.URL{Scheme: "http", User: url.UserPassword(inst.ID(), token), Host: s.ProxyAddr().String()}
	s.log.Info("instance created", "instance", inst.ID(), "class", inst.Class(), "caNotAfter", authority.NotAfter().UTC().Format(time.RFC3339))
	return control.Created{ID: inst.ID(), Class: inst.Class(), ProxyURL: u.String(), CAPEM: string(authority.CertPEM())}, nil
}

func (b *controlBackend) ListInstances() []any {
	list := b.s.registry.List()
	out := make([]any, 0, len(list))
	for _, inst := range list {
		out = append(out, b.view(b.s.registry.View(inst)))
	}
	return out
}

func (b *controlBackend) instance(id string) (*instances.Instance, error) {
	inst, ok := b.s.registry.Get(id)
	if !ok {
		return nil, &control.Error{Status: 404, Msg: fmt.Sprintf("no instance %q", id)}
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

// view adds what the registry does not hold: the CA's expiry.
func (b *controlBackend) view(v instances.View) instances.View {
	if a, ok := b.s.cas.Get(v.ID); ok {
		t := a.NotAfter().UTC()
		v.CANotAfter = &t
	}
	return v
}

// DeleteInstance removes the instance, its token, its CA key, its trace and
// every connection it has open.
func (b *controlBackend) DeleteInstance(ctx context.Context, id string) error {
	s := b.s
	if err := s.registry.Delete(ctx, id); err != nil {
		return apiError(err)
	}
	s.cas.Remove(id)
	s.har.Remove(id)
	s.proxy.CloseInstance(id)
	s.log.Info("instance deleted", "instance", id)
	return nil
}

func (b *controlBackend) CAPEM(id string) ([]byte, error) {
	if _, err := b.instance(id); err != nil {
		return nil, err
	}
	a, ok := b.s.cas.Get(id)
	if !ok {
		return nil, &control.Error{Status: 404, Msg: fmt.Sprintf("no CA for instance %q", id)}
	}
	return a.CertPEM(), nil
}

func (b *controlBackend) HAR(id string) ([]byte, error) {
	if _, err := b.instance(id); err != nil {
		return nil, err
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
func (b *controlBackend) Explain(_ context.Context, id, rawURL, _ string) (any, error) {
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

func (b *controlBackend) KV(binding string) (store.KV, bool) {
	for _, name := range b.s.cfg.KV {
		if name == binding {
			return b.s.store.KV(binding), true
		}
	}
	return nil, false
}
