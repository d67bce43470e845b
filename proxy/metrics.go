package proxy

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/outbound-dev/outbound/proxy/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus series. Build one with NewMetrics on
// the registry the admin listener serves, and hand its hooks to the CA
// registry (LeafLookup) and the upstream transport (UpstreamError). A nil
// *Metrics records nothing.
type Metrics struct {
	requests       *prometheus.CounterVec
	handlerSeconds *prometheus.HistogramVec
	upstreamErrors *prometheus.CounterVec
	leafCache      *prometheus.CounterVec
	tunnels        *prometheus.GaugeVec
	tunnelsCut     *prometheus.CounterVec

	// Children resolved once per label set: WithLabelValues hashes and
	// formats on every call, which shows on the per-request path.
	requestByKey sync.Map // requestKey -> prometheus.Counter
	handlerByKey sync.Map // handler name -> prometheus.Observer
}

type requestKey struct {
	step   string
	status int
}

// NewMetrics registers the proxy's series on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_requests_total",
			Help: "Requests (and CONNECTs) answered, by the step that decided and the status sent.",
		}, []string{"step", "status"}),
		handlerSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outbound_handler_duration_seconds",
			Help:    "Time from handing a request to the policy until its response headers, for requests a handler served.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"handler"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_upstream_errors_total",
			Help: "Failed upstream dials and round trips, by kind (deny, dns, refused, tls, timeout, other).",
		}, []string{"kind"}),
		leafCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_tls_leaf_cache_total",
			Help: "Interception leaf certificate lookups, by result (hit or miss).",
		}, []string{"result"}),
		tunnels: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outbound_active_tunnels",
			Help: "Open CONNECT tunnels and captured connections, by mode (raw, intercept, or http for captured plain HTTP).",
		}, []string{"mode"}),
		tunnelsCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_tunnels_cut_total",
			Help: "Open opaque tunnels closed because a policy change no longer lets them through, by what the policy now does (blocked or intercepted).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.handlerSeconds, m.upstreamErrors, m.leafCache, m.tunnels, m.tunnelsCut} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: register metrics: %w", err)
		}
	}
	// Expose the zero series so dashboards see them before the first event.
	for _, r := range []string{"hit", "miss"} {
		m.leafCache.WithLabelValues(r)
	}
	for _, mode := range []string{modeRaw, modeIntercept, modeCapturedHTTP} {
		m.tunnels.WithLabelValues(mode)
	}
	for _, r := range []string{"blocked", "intercepted"} {
		m.tunnelsCut.WithLabelValues(r)
	}
	return m, nil
}

// LeafLookup counts a leaf cache lookup; pass it as ca.Options.OnLeafLookup.
func (m *Metrics) LeafLookup(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.leafCache.WithLabelValues("hit").Inc()
	} else {
		m.leafCache.WithLabelValues("miss").Inc()
	}
}

// UpstreamError counts an upstream failure; pass it as upstream.Options.OnError.
func (m *Metrics) UpstreamError(k upstream.Kind) {
	if m == nil {
		return
	}
	m.upstreamErrors.WithLabelValues(string(k)).Inc()
}

func (m *Metrics) request(step string, status int) {
	if m == nil {
		return
	}
	k := requestKey{step, status}
	c, ok := m.requestByKey.Load(k)
	if !ok {
		c, _ = m.requestByKey.LoadOrStore(k, m.requests.WithLabelValues(step, strconv.Itoa(status)))
	}
	c.(prometheus.Counter).Inc()
}

func (m *Metrics) handler(name string, d time.Duration) {
	if m == nil || name == "" {
		return
	}
	o, ok := m.handlerByKey.Load(name)
	if !ok {
		o, _ = m.handlerByKey.LoadOrStore(name, m.handlerSeconds.WithLabelValues(name))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

func (m *Metrics) tunnel(mode string, delta float64) {
	if m == nil {
		return
	}
	m.tunnels.WithLabelValues(mode).Add(delta)
}

func (m *Metrics) tunnelCut(reason string) {
	if m == nil {
		return
	}
	m.tunnelsCut.WithLabelValues(reason).Inc()
}
