module github.com/sluicehq/sluice/bench/muxcompare

go 1.26.8

replace github.com/sluicehq/sluice => ../..

require (
	github.com/gorilla/websocket v1.5.3
	github.com/hashicorp/yamux v0.1.2
	github.com/sluicehq/sluice v0.0.0
	github.com/xtaci/smux v1.5.58
	golang.org/x/net v0.62.0
)

require golang.org/x/text v0.43.0 // indirect
