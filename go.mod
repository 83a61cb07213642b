module github.com/sluicehq/sluice

go 1.26.8

require go.uber.org/goleak v1.3.0

require github.com/gorilla/websocket v1.5.3
