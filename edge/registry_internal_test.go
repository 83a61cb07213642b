package edge

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/tunnel"
)

// heldSession stands for an agent's session: the registry only stores it.
type heldSession struct{ tunnel.Session }

// An offline name stays with its token for exactly the offline memory, on
// the bubble's clock: another token is refused until it has passed, the
// same token comes back at any time.
func TestOfflineReservationExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const memory = 24 * time.Hour
		r := newRegistry(memory)
		claim := func(token string) claimResult {
			_, res := r.claim("mine", token, false, r.decision(), &heldSession{}, nil, nil)
			return res
		}
		s := &heldSession{}
		if _, res := r.claim("mine", "T", false, r.decision(), s, nil, nil); res != claimed {
			t.Fatalf("first claim: %v", res)
		}
		if res := claim("T2"); res != claimTaken {
			t.Fatalf("another token while online: %v, want claimTaken", res)
		}
		r.release("mine", s)
		time.Sleep(memory - time.Second)
		if res := claim("T2"); res != claimReserved {
			t.Fatalf("another token a second before the memory ends: %v, want claimReserved", res)
		}
		time.Sleep(2 * time.Second)
		if res := claim("T2"); res != claimed {
			t.Fatalf("another token after the memory: %v, want claimed", res)
		}
	})
}
