package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Concurrent PATCHes of one tunnel through the API all apply, one after
// the other: the version counts every one, and the last state is one of
// them.
func TestAPIConcurrentUpdates(t *testing.T) {
	t.Parallel()
	e, _, _, secret := storeEdge(t, 0)
	call := func(method, path, body string) (int, map[string]any) {
		req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+e.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer A")
		resp, err := e.client.Do(req)
		if err != nil {
			return 0, map[string]any{"error": err.Error()}
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	if code, v := call("POST", "/api/tunnels", `{"name":"busy","upstream":"http://127.0.0.1:1","agent_token":"`+secret+`"}`); code != 201 {
		t.Fatalf("create: %d %v", code, v)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"upstream":"http://127.0.0.1:%d","host_header":"h%d"}`, 1000+i, i)
			if code, v := call("PATCH", "/api/tunnels/busy", body); code != 200 {
				errs <- fmt.Sprintf("PATCH %d: %d %v", i, code, v)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	code, v := call("GET", "/api/tunnels/busy", "")
	tun, _ := v["tunnel"].(map[string]any)
	if code != 200 || tun["version"] != float64(n+1) {
		t.Fatalf("after %d updates: %d %v, want version %d", n, code, v, n+1)
	}
	var i int
	if _, err := fmt.Sscanf(tun["host_header"].(string), "h%d", &i); err != nil || tun["upstream"] != fmt.Sprintf("http://127.0.0.1:%d", 1000+i) {
		t.Fatalf("inconsistent tunnel: upstream %v with host_header %v", tun["upstream"], tun["host_header"])
	}
}
