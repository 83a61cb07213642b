package benchmark

import (
	"context"
	"fmt"
	"sync"
)

// PairedResult is a tunnel's small requests measured at the same time as
// the relays': the two chains run side by side, each loaded by half the
// clients, and each one's CPU time per request is read over the same
// seconds. Measured one after the other, as the rest of a round is, the
// two figures meet different machines whenever a neighbour's load moves
// (on a shared virtual machine the same binary moved by a third within an
// hour); measured together, both see the same steal and the same
// neighbours, so their ratio holds still where the figures move.
type PairedResult struct {
	Clients int `json:"clients"` // each side's
	// CPU time of both processes of each side per request, µs.
	UsPerReq       float64 `json:"us_per_req"`
	RelaysUsPerReq float64 `json:"relays_us_per_req"`
	CPURatio       float64 `json:"cpu_x_relays"` // UsPerReq / RelaysUsPerReq
	// Requests per second of each side.
	ReqPerSec       float64 `json:"req_per_s"`
	RelaysReqPerSec float64 `json:"relays_req_per_s"`
	ReqRatio        float64 `json:"req_x_relays"` // ReqPerSec / RelaysReqPerSec
}

// pairedTargets are the targets measured paired with the relays: the
// tunnels, two processes each, of which two bare relays are the floor.
var pairedTargets = []string{"sluice-v1", "sluice-v2", "sluice-v2-base", "sluice-tcp", "frp-tcp", "chisel"}

// paired measures tunnel name's small requests beside the relays'.
func (b *bench) paired(ctx context.Context, name string) (*PairedResult, error) {
	rel, err := b.start(ctx, "relays")
	if err != nil {
		return nil, fmt.Errorf("the relays: %w", err)
	}
	defer rel.stop()
	t, err := b.start(ctx, name)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	sides := []target{rel, t}
	var procs [2][]proc
	var meters [2]*cpuMeter
	for i, s := range sides {
		if procs[i], err = s.procs(); err == nil {
			meters[i], err = startCPU(procs[i])
		}
		if err != nil {
			return nil, err
		}
	}
	n := max(b.cfg.Clients/2, 1)
	var res [2]*SmallResult
	var errs [2]error
	var wg sync.WaitGroup
	for i, s := range sides {
		wg.Go(func() {
			res[i], errs[i] = b.smallN(ctx, &client{base: s.baseURL(), host: s.host()}, n)
		})
	}
	wg.Wait()
	var us [2]float64
	for i := range sides {
		if errs[i] != nil {
			return nil, errs[i]
		}
		used, err := meters[i].used(procs[i])
		if err != nil {
			return nil, err
		}
		us[i] = splitByRole(procs[i], used, float64(res[i].AllRequests)/1e6).Total
	}
	p := &PairedResult{
		Clients:        n,
		UsPerReq:       us[1],
		RelaysUsPerReq: us[0],
		ReqPerSec:      res[1].ReqPerSec, RelaysReqPerSec: res[0].ReqPerSec,
	}
	if us[0] > 0 {
		p.CPURatio = us[1] / us[0]
	}
	if res[0].ReqPerSec > 0 {
		p.ReqRatio = res[1].ReqPerSec / res[0].ReqPerSec
	}
	return p, nil
}
