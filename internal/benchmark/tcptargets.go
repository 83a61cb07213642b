package benchmark

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// forwardingTCP is the line "sluice tcp" prints once its tunnel is up;
// the public port is the one in it.
var forwardingTCP = regexp.MustCompile(`Forwarding tcp://\S+:(\d+) -> `)

// startSluiceTCP starts "sluice edge --tcp-ports" and "sluice tcp UPADDR
// --protocol PROTOCOL" as child processes of bin, and returns them with
// the tunnel's public address, read from the agent's Forwarding line.
// The edge admits as many connections from the loopback address as the
// benchmark opens, and maxConns at once through the tunnel.
func startSluiceTCP(ctx context.Context, bin, upAddr, protocol string, maxConns int) (*procTarget, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	tcpPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	t := &procTarget{base: "http://" + addr}
	edge, err := startChild("sluice edge", bin, "edge", "--listen", addr, "--domain", "localhost", "--token", token,
		"--tcp-ports", fmt.Sprintf("%d-%d", tcpPort, tcpPort), "--max-streams-per-ip", "1000000", "--max-streams", strconv.Itoa(maxConns))
	if err != nil {
		return nil, "", err
	}
	edge.role = roleEdge
	t.children = append(t.children, edge)
	if err := waitReady(ctx, t, "/healthz", ""); err != nil {
		t.stop()
		return nil, "", fmt.Errorf("the edge did not start: %w\n%s", err, t.output())
	}
	agent, err := startChildWith("sluice tcp", true, bin,
		"tcp", upAddr, "--edge", "http://"+addr, "--token", token, "--name", "bench", "--quiet", "--protocol", protocol)
	if err != nil {
		t.stop()
		return nil, "", err
	}
	agent.role = roleAgent
	t.children = append(t.children, agent)
	deadline := time.Now().Add(readyTimeout)
	for {
		if m := forwardingTCP.FindStringSubmatch(agent.stdout.String()); m != nil {
			return t, "127.0.0.1:" + m[1], nil
		}
		if err := t.alive(); err != nil {
			t.stop()
			return nil, "", fmt.Errorf("the tunnel did not come up: %w\n%s", err, t.output())
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			t.stop()
			return nil, "", fmt.Errorf("no Forwarding line from sluice tcp within %v\n%s", readyTimeout, t.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// frpsConf and frpcConf are frp's TOML configurations (frp 0.52 and
// later): one TCP proxy from the server's remotePort to the upstream,
// authenticated by a token; logs to the console.
const frpsConf = `# written by sluice bench
bindAddr = "127.0.0.1"
bindPort = {{bindport}}
auth.method = "token"
auth.token = "{{token}}"
log.to = "console"
log.level = "warn"
`

const frpcConf = `# written by sluice bench
serverAddr = "127.0.0.1"
serverPort = {{bindport}}
auth.method = "token"
auth.token = "{{token}}"
log.to = "console"
log.level = "warn"

[[proxies]]
name = "bench"
type = "tcp"
localIP = "{{uphost}}"
localPort = {{upport}}
remotePort = {{remoteport}}
`

// startFrp starts frps and frpc of dir on generated configurations, one
// TCP proxy to upAddr, and returns them with the proxy's public address.
// The caller waits for the first round trip.
func startFrp(ctx context.Context, dir, upAddr string) (*procTarget, string, error) {
	bindPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	remotePort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	upHost, upPort, err := net.SplitHostPort(upAddr)
	if err != nil {
		return nil, "", err
	}
	tmp, err := os.MkdirTemp("", "sluice-bench-frp-")
	if err != nil {
		return nil, "", err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	r := strings.NewReplacer(
		"{{bindport}}", strconv.Itoa(bindPort),
		"{{token}}", hex.EncodeToString(tok),
		"{{uphost}}", upHost,
		"{{upport}}", upPort,
		"{{remoteport}}", strconv.Itoa(remotePort),
	)
	t := &procTarget{cleanup: func() { os.RemoveAll(tmp) }}
	for _, p := range []struct{ bin, conf, text, role string }{
		{"frps", "frps.toml", frpsConf, roleEdge},
		{"frpc", "frpc.toml", frpcConf, roleAgent},
	} {
		conf := filepath.Join(tmp, p.conf)
		if err := os.WriteFile(conf, []byte(r.Replace(p.text)), 0o600); err != nil {
			t.stop()
			return nil, "", err
		}
		c, err := startChild(p.bin, filepath.Join(dir, p.bin), "-c", conf)
		if err != nil {
			t.stop()
			return nil, "", err
		}
		c.role = p.role
		t.children = append(t.children, c)
		if p.bin == "frps" {
			if err := waitListening(ctx, t, "127.0.0.1:"+strconv.Itoa(bindPort)); err != nil {
				t.stop()
				return nil, "", fmt.Errorf("frps did not start: %w\n%s", err, t.output())
			}
		}
	}
	return t, "127.0.0.1:" + strconv.Itoa(remotePort), nil
}

// startChisel starts "chisel server --reverse" and "chisel client
// R:PORT:UPADDR" of dir, a reverse TCP tunnel from the server's PORT to
// upAddr, and returns them with the tunnel's public address. The caller
// waits for the first round trip.
func startChisel(ctx context.Context, dir, upAddr string) (*procTarget, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	remotePort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	auth := "bench:" + hex.EncodeToString(tok)
	bin := filepath.Join(dir, "chisel")
	server := "127.0.0.1:" + strconv.Itoa(port)
	t := &procTarget{}
	s, err := startChild("chisel server", bin, "server", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--reverse", "--auth", auth)
	if err != nil {
		return nil, "", err
	}
	s.role = roleEdge
	t.children = append(t.children, s)
	if err := waitListening(ctx, t, server); err != nil {
		t.stop()
		return nil, "", fmt.Errorf("the chisel server did not start: %w\n%s", err, t.output())
	}
	c, err := startChild("chisel client", bin, "client", "--auth", auth, "http://"+server,
		fmt.Sprintf("R:127.0.0.1:%d:%s", remotePort, upAddr))
	if err != nil {
		t.stop()
		return nil, "", err
	}
	c.role = roleAgent
	t.children = append(t.children, c)
	return t, "127.0.0.1:" + strconv.Itoa(remotePort), nil
}

// waitListening waits until addr accepts connections, for up to
// readyTimeout, while t's processes run.
func waitListening(ctx context.Context, t *procTarget, addr string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := t.alive(); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still refusing after %v: %w", addr, readyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startTCPTunnel starts sluice's TCP tunnel over v2 ("sluice-tcp"), frp's
// TCP mode ("frp-tcp") or chisel as a target
// of the comparative run: a TCP tunnel to the HTTP upstream on upPort,
// which the clients reach as they reach the relays, and waits until it
// proxies.
func startTCPTunnel(ctx context.Context, cfg Config, name string, upPort int) (target, error) {
	upAddr := "127.0.0.1:" + strconv.Itoa(upPort)
	var t *procTarget
	var addr string
	var err error
	switch name {
	case "sluice-tcp":
		t, addr, err = startSluiceTCP(ctx, cfg.SluiceBin, upAddr, "v2", cfg.maxStreams())
	case "frp-tcp":
		t, addr, err = startFrp(ctx, cfg.FrpDir, upAddr)
	case "chisel":
		t, addr, err = startChisel(ctx, cfg.ChiselDir, upAddr)
	default:
		return nil, fmt.Errorf("benchmark: %q is not a TCP tunnel", name)
	}
	if err != nil {
		return nil, err
	}
	t.base = "http://" + addr
	if err := waitReady(ctx, t, "/small", ""); err != nil {
		out := t.output()
		t.stop()
		return nil, fmt.Errorf("the %s tunnel did not come up: %w\n%s", name, err, out)
	}
	return t, nil
}
