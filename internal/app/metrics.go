package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbound-dev/outbound/internal/events"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/proxy/ca"
)

// metrics are the server's own series; the proxy registers its own.
type metrics struct {
	generation    prometheus.Gauge
	loads         *prometheus.CounterVec
	scriptError   prometheus.Gauge
	remoteChanges prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, hub *events.Hub, health func() store.Health) (*metrics, error) {
	m := &metrics{
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbound_script_generation", Help: "The script generation serving requests.",
		}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbound_script_loads_total", Help: "Script load attempts by result.",
		}, []string{"result"}),
		scriptError: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbound_script_error", Help: "1 while the last script load failed and an older generation serves.",
		}),
	}
	subscribers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outbound_events_subscribers", Help: "Clients watching the live event stream (/v1/events).",
	}, func() float64 { return float64(hub.Subscribers()) })
	dropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "outbound_events_dropped_total", Help: "Live events dropped for watchers that fell behind.",
	}, func() float64 { return float64(hub.Dropped()) })
	m.remoteChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outbound_store_remote_changes_total", Help: "Instance changes made by other replicas of the fleet and applied here.",
	})
	up := flag("outbound_store_up", "1 while the store is reachable and its change feed connected; 0 while this replica decides on the last known state.",
		func() bool { return health().Up })
	resyncs := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "outbound_store_resyncs_total", Help: "Full rereads of the shared store after its change feed reconnected.",
	}, func() float64 { return float64(health().Resyncs) })
	claimLost := flag("outbound_store_home_claim_lost", "1 while another process holds this replica's home claim (two replicas with one --advertise).",
		func() bool { return health().ClaimLost })
	for _, c := range []prometheus.Collector{m.generation, m.loads, m.scriptError, m.remoteChanges, up, resyncs, claimLost, subscribers, dropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) scriptLoaded(gen int, err error) {
	m.generation.Set(float64(gen))
	if err != nil {
		m.loads.WithLabelValues("error").Inc()
		m.scriptError.Set(1)
		return
	}
	m.loads.WithLabelValues("ok").Inc()
	m.scriptError.Set(0)
}

// caExpiry reports the earliest expiry among the instance CAs, so an alert
// can fire well before a sandbox's CA runs out. With no instances it
// reports nothing rather than a misleading zero.
type caExpiry struct{ cas *ca.Registry }

var caExpiryDesc = prometheus.NewDesc("outbound_ca_next_expiry_timestamp_seconds",
	"When the first of the instance CAs expires (Unix seconds); a CA is never rotated, so recreate that instance before then.", nil, nil)

func (c caExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- caExpiryDesc }

func (c caExpiry) Collect(ch chan<- prometheus.Metric) {
	if t, ok := c.cas.NextExpiry(); ok {
		ch <- prometheus.MustNewConstMetric(caExpiryDesc, prometheus.GaugeValue, float64(t.Unix()))
	}
}

// flag is a gauge that is 1 while on() holds, else 0.
func flag(name, help string, on func() bool) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
		if on() {
			return 1
		}
		return 0
	})
}
