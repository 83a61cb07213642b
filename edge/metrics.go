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
	limited       *prometheus.CounterVec
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
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_limited_total", Help: "Public requests refused or cut by a per-visitor limit: streams_per_ip (429), body_idle (an upload that sent nothing for --body-idle-timeout), write_idle (a client that read nothing for --write-idle-timeout).",
	}, []string{"reason"})
	m.bytesIn, m.bytesOut = m.bytes.WithLabelValues("in"), m.bytes.WithLabelValues("out")
	m.reg.MustRegister(m.tunnelsOnline, m.requests, m.bytes, m.openStreams, m.frameErrors, m.agentConns, m.pushConns, m.limited,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
