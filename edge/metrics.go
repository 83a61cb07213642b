package edge

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the edge's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg           *prometheus.Registry
	tunnelsOnline prometheus.Gauge
	requests      *prometheus.CounterVec
	byCode        [500]atomic.Pointer[prometheus.Counter] // requests{code} for 100-599, resolved once each: on every request's path
	bytes         *prometheus.CounterVec
	bytesIn       prometheus.Counter // bytes{direction="in"}, resolved once: it is on the body path
	bytesOut      prometheus.Counter
	openStreams   prometheus.Gauge
	frameErrors   *prometheus.CounterVec
	agentConns    *prometheus.CounterVec
	pushConns     prometheus.Gauge
	upgrades      prometheus.Counter
	upgradedIn    prometheus.Counter // upgraded_bytes{direction="in"}: from public clients
	upgradedOut   prometheus.Counter
	// handshakesPending are agent handshakes not yet registered or
	// refused; past Config.MaxPendingHandshakesPerIP from one address,
	// agentConns counts result="too_many_pending".
	handshakesPending prometheus.Gauge
	// accessQueries are the store queries for visitor rules: "tunnel"
	// (one name) and "list" (the set of stored names), and for custom
	// hostnames: "hostnames" (the map of them) and "hostname" (one).
	accessQueries *prometheus.CounterVec
	bcryptRuns    prometheus.Counter // basic-auth checks that ran bcrypt
	limited       *prometheus.CounterVec
	// conns are the public connections of TCP tunnels, by tunnel type and
	// result (ok, refused: not_allowed, streams_per_ip, open_failed);
	// openConns those in progress; connBytes their bytes, in (from public
	// clients) and out.
	conns       *prometheus.CounterVec
	openConns   *prometheus.GaugeVec
	connBytes   *prometheus.CounterVec
	tcpBytesIn  prometheus.Counter // connBytes{type="tcp",direction="in"}, resolved once
	tcpBytesOut prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		tunnelsOnline: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_tunnels_online", Help: "Tunnels whose agent is connected.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_requests_total", Help: "Public requests answered, by status code: through tunnels and by the edge itself (404, 401, 403, 429, 503, ...); 101 for upgrades.",
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
		upgrades: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_upgrades_total", Help: "Public requests upgraded (101 Switching Protocols: WebSocket and others) through tunnels.",
		}),
	}
	upgraded := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upgraded_bytes_total", Help: "Bytes of upgraded connections (WebSocket and others) through tunnels: in (from public clients) and out.",
	}, []string{"direction"})
	m.upgradedIn, m.upgradedOut = upgraded.WithLabelValues("in"), upgraded.WithLabelValues("out")
	m.handshakesPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_agent_handshakes_pending", Help: "Agent WebSocket handshakes in progress (not yet registered or refused).",
	})
	m.accessQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_access_store_queries_total", Help: "Store queries for tunnels' visitor rules and custom hostnames, by kind (tunnel, list, hostnames, hostname).",
	}, []string{"kind"})
	m.bcryptRuns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_basic_auth_bcrypt_total", Help: "Visitor basic-auth checks that ran bcrypt (credentials not verified before).",
	})
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_limited_total", Help: "Public requests refused or cut by a per-visitor limit: streams_per_ip (429), body_idle (an upload that sent nothing for --body-idle-timeout), write_idle (a client that read nothing for --write-idle-timeout).",
	}, []string{"reason"})
	m.reg.MustRegister(m.handshakesPending, m.accessQueries, m.bcryptRuns, m.limited)
	m.conns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_connections_total", Help: "Public connections to TCP tunnels' ports, by tunnel type and result: ok (carried to the agent), not_allowed (visitor allowlist, disabled or gone tunnel), streams_per_ip, open_failed (the session refused or died).",
	}, []string{"type", "result"})
	m.openConns = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_open_connections", Help: "Public connections to TCP tunnels' ports carried now, by tunnel type.",
	}, []string{"type"})
	m.connBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_connection_bytes_total", Help: "Bytes of public connections to TCP tunnels' ports, by tunnel type: in (from public clients) and out.",
	}, []string{"type", "direction"})
	m.tcpBytesIn, m.tcpBytesOut = m.connBytes.WithLabelValues("tcp", "in"), m.connBytes.WithLabelValues("tcp", "out")
	m.reg.MustRegister(m.conns, m.openConns, m.connBytes)
	m.bytesIn, m.bytesOut = m.bytes.WithLabelValues("in"), m.bytes.WithLabelValues("out")
	m.reg.MustRegister(m.tunnelsOnline, m.requests, m.bytes, m.openStreams, m.frameErrors, m.agentConns, m.pushConns, m.upgrades, upgraded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// statusWriter counts the response to one public request (a tunnel's host)
// in sluice_requests_total, whoever writes it: the tunnel, or the edge
// itself (no such tunnel, visitor rules, limits). A hijacked connection
// is an upgrade: counted as 101, and its bytes in sluice_upgraded_bytes.
type statusWriter struct {
	http.ResponseWriter
	m         *metrics
	code      int
	hijacked  bool
	writeIdle time.Duration // for an upgraded connection (Config.WriteIdleTimeout)
}

func (w *statusWriter) WriteHeader(code int) {
	if code >= 200 && w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush is found by handlers that do not use a ResponseController.
func (w *statusWriter) Flush() { w.FlushError() }

// FlushError is Flush with its error, for http.ResponseController (the
// guard's flush of every piece of a streamed response comes here: asked
// directly, without a ResponseController of its own per flush).
func (w *statusWriter) FlushError() error {
	switch f := w.ResponseWriter.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack takes the connection for an upgrade (found by
// http.ResponseController before Unwrap).
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	return &upgradedConn{Conn: c, m: w.m, writeIdle: w.writeIdle}, rw, nil
}

// done counts the response once its handler has returned.
func (w *statusWriter) done() {
	code := w.code
	switch {
	case w.hijacked:
		code = http.StatusSwitchingProtocols
		w.m.upgrades.Inc()
	case code == 0:
		code = http.StatusOK
	}
	w.m.requestCount(code).Inc()
}

// requestCount returns requests{code}: for 100-599 resolved once (the
// label's hash and lookup, and the code's string, were 2 % of the edge's
// CPU per small request), created only when first counted so that
// /metrics lists the codes answered.
func (m *metrics) requestCount(code int) prometheus.Counter {
	if code < 100 || code > 599 {
		return m.requests.WithLabelValues(strconv.Itoa(code))
	}
	slot := &m.byCode[code-100]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(strconv.Itoa(code))
	slot.Store(&c)
	return c
}

// upgradedConn counts the bytes of an upgraded public connection, and
// cuts a client that reads nothing for writeIdle (a write that cannot
// finish in that time fails, which ends the connection), as for any other
// response; a connection with nothing to send is never cut.
type upgradedConn struct {
	net.Conn
	m         *metrics
	writeIdle time.Duration
}

func (c *upgradedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.m.upgradedIn.Add(float64(n))
	return n, err
}

func (c *upgradedConn) Write(b []byte) (int, error) {
	if c.writeIdle > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.writeIdle))
		defer c.Conn.SetWriteDeadline(time.Time{})
	}
	n, err := c.Conn.Write(b)
	c.m.upgradedOut.Add(float64(n))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.m.limited.WithLabelValues("write_idle").Inc()
	}
	return n, err
}
