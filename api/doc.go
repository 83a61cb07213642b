// Package api is the Go contract of an edge's control-plane API, the one
// docs/api.md describes: the request and response bodies of every /api/
// endpoint, the error envelope and its codes, the push channel's event
// names and data, and Client, a typed client of the API that the sluice
// command and the remotely managed agent both use.
//
// The edge serves these types (converting from its store's own types, which
// are persistence types and never API bodies); a change here is a change of
// the API for every client, in Go or not.
//
// The package uses the standard library and the wire package only.
package api
