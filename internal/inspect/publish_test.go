package inspect

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// drain returns the events sub has, once the publisher has nothing more to
// send (in a synctest bubble: time moves on only when all is idle), as
// "type path-or-id state-or-text" lines.
func drain(t *testing.T, sub *sse.Subscription) []string {
	t.Helper()
	time.Sleep(publishDelay)
	synctest.Wait()
	var out []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		ev, err := sub.Next(ctx)
		cancel()
		if err != nil {
			return out
		}
		switch ev.Type {
		case EventRequest:
			var r Request
			if err := json.Unmarshal([]byte(ev.Data), &r); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("request %s %s items=%d", r.Path, r.State, r.ItemCount))
		case EventItem:
			var it ItemEvent
			if err := json.Unmarshal([]byte(ev.Data), &it); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("item %s %d %s", it.ID, it.Item.N, it.Item.Text))
		default:
			out = append(out, ev.Type+" "+ev.Data)
		}
	}
}

func queued(in *Inspector) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.pub.queue)
}

func expect(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The publisher: a request's changes within a batch are one event with its
// latest state, items follow in order, removals of what was shown come
// after; nothing is queued while nobody watches, and what changed
// meanwhile is published when a watcher comes.
func TestPublisher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := New(Config{MaxRequests: 2})
		defer in.Close()
		get := func(path string) *Entry { return in.Begin(httptest.NewRequest("GET", path, nil), "") }

		// Nobody watches: nothing is queued.
		e1 := get("/one")
		e1.Response(200, http.Header{})
		e1.End(nil)
		if n := queued(in); n != 0 {
			t.Fatalf("%d queued without a watcher", n)
		}

		// A watcher gets what changed before it, in its latest state.
		unwatch := in.watch()
		sub, err := in.Hub().Subscribe(Topic, "")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		expect(t, drain(t, sub), "request /one done items=0")

		// Begin, response, items and end within a batch: one request
		// event, then the items in order.
		e2 := get("/two")
		e2.Response(200, http.Header{"Content-Type": {"text/event-stream"}})
		for _, s := range []string{"a", "b", "c"} {
			e2.AddItem(Item{Kind: "event", Text: s})
		}
		e2.End(nil)
		expect(t, drain(t, sub), "request /two done items=3", "item 2 1 a", "item 2 2 b", "item 2 3 c")

		// Across batches: each state as it is at its batch.
		e3 := get("/three")
		expect(t, drain(t, sub), "removed {\"id\":\"1\"}", "request /three waiting items=0")
		e3.Response(200, http.Header{})
		e3.AddItem(Item{Kind: "line", Text: "x"})
		expect(t, drain(t, sub), "request /three streaming items=1", "item 3 1 x")
		e3.End(nil)
		expect(t, drain(t, sub), "request /three done items=1")

		// A request removed before its batch is not published; one shown
		// before is removed once.
		e4 := get("/four") // removes /two
		e5 := get("/five") // removes /three
		e6 := get("/six")  // removes /four, in flight: never shown
		for _, e := range []*Entry{e4, e5, e6} {
			e.End(nil)
		}
		expect(t, drain(t, sub), "removed {\"id\":\"2\"}", "removed {\"id\":\"3\"}", "request /five done items=0", "request /six done items=0")

		// Nobody watches again: removals of what was shown wait (nothing
		// else is queued), and a new watcher gets them and the latest
		// state of what changed.
		unwatch()
		e7 := get("/seven") // removes /five
		e7.AddItem(Item{Kind: "line", Text: "unseen"})
		e7.End(nil)
		if n := queued(in); n != 1 {
			t.Fatalf("%d queued without a watcher, want the removal of /five", n)
		}
		expect(t, drain(t, sub))
		in.watch()
		expect(t, drain(t, sub), "removed {\"id\":\"5\"}", "request /seven done items=1")
	})
}

// A stream faster than the publisher: the items beyond maxQueuedItems are
// left out of the live feed, never held; the record keeps its own.
func TestPublisherBoundsItems(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in := New(Config{})
		defer in.Close()
		defer in.watch()()
		e := in.Begin(httptest.NewRequest("GET", "/fast", nil), "")
		for range maxQueuedItems + 100 {
			e.AddItem(Item{Kind: "line", Text: "x"})
		}
		if n := queued(in); n != maxQueuedItems+1 {
			t.Fatalf("%d queued", n)
		}
		e.End(nil)
		time.Sleep(publishDelay)
		synctest.Wait()
		if n := queued(in); n != 0 {
			t.Fatalf("%d queued after a batch", n)
		}
		if r, _ := in.Get(e.ID()); r.ItemCount != maxQueuedItems+100 {
			t.Fatalf("item count %d", r.ItemCount)
		}
	})
}
