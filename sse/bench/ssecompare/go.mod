module github.com/sluicehq/sluice/sse/bench/ssecompare

go 1.26.8

require (
	github.com/r3labs/sse/v2 v2.10.0
	github.com/tmaxmax/go-sse v0.12.0
	gopkg.in/cenkalti/backoff.v1 v1.1.0
)

require (
	github.com/sluicehq/sluice/sse v0.0.0
	golang.org/x/net v0.0.0-20191116160921-f9c825593386 // indirect
)

replace github.com/sluicehq/sluice/sse => ../..
