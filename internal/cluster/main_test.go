package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	QuietRedis()
	goleak.VerifyTestMain(m)
}
