package edge

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the edge's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg           *prometheus.Registry
	tunnelsOnline prometheus.Gauge
	requests      *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	bytesIn       prometheus.Counter // bytes{direction="in"}, resolved once: it is on the body path
	bytesOut      prometheus.Counter
	openStreams   prometheus.Gauge
	frameErrors   *prometheus.CounterVec
	agentConns    *prometheus.CounterVec
	pushConns     prometheus.Gauge
	// handshakesPending are agent handshakes not yet registered or
	// refused; past Config.MaxPendingHandshakesPerIP from one address,
	// agentConns counts result="too_many_pending".
	handshakesPending prometheus.Gauge
	// accessQueries are the store queries for visitor rules: "tunnel"
	// (one name) and "list" (the set of stored names).
	accessQueries *prometheus.CounterVec
	bcryptRuns    prometheus.Counter // basic-auth checks that ran bcrypt
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		tunnelsOnline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_tunnels_online", Help: "Tunnels whose agent is connected.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_requests_total", Help: "Public requests answered, by status code.",
		}, []string{"code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_bytes_total", Help: "Body bytes through tunnels: in (request bodies) and out (response bodies).",
		}, []string{"direction"}),
		openStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_open_streams", Help: "Public requests in flight through tunnels.",
		}),
		frameErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_frame_errors_total", Help: "Bad frames from agents, by kind.",
		}, []string{"kind"}),
		agentConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_agent_registrations_total", Help: "Agent registrations, by result.",
		}, []string{"result"}),
		pushConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_push_connections", Help: "Managed agents' push channels (SSE) open now.",
		}),
	}
	m.handshakesPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_agent_handshakes_pending", Help: "Agent WebSocket handshakes in progress (not yet registered or refused).",
	})
	m.accessQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_access_store_queries_total", Help: "Store queries for tunnels' visitor rules, by kind (tunnel, list).",
	}, []string{"kind"})
	m.bcryptRuns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_basic_auth_bcrypt_total", Help: "Visitor basic-auth checks that ran bcrypt (credentials not verified before).",
	})
	m.reg.MustRegister(m.handshakesPending, m.accessQueries, m.bcryptRuns)
	m.bytesIn, m.bytesOut = m.bytes.WithLabelValues("in"), m.bytes.WithLabelValues("out")
	m.reg.MustRegister(m.tunnelsOnline, m.requests, m.bytes, m.openStreams, m.frameErrors, m.agentConns, m.pushConns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
