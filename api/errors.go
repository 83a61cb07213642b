package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/sluicehq/sluice/wire"
)

// Error codes of the API's error envelope. Codes that name the same
// condition as an agent's error frame are wire's.
const (
	CodeUnauthorized  = wire.CodeUnauthorized // 401: a missing or wrong token
	CodeTokenRevoked  = wire.CodeTokenRevoked // 401: a revoked token
	CodeNotFound      = "not_found"           // 404: no such route, token or tunnel
	CodeExists        = "exists"              // 409: the name is taken
	CodeBadJSON       = "bad_json"            // 400: the body is not the JSON expected
	CodeBadKind       = "bad_kind"            // 400: a token kind other than agent or admin
	CodeBadName       = "bad_name"            // 400: a name that is not a DNS label, or too long
	CodeBadUpstream   = "bad_upstream"        // 400: not an http://, https:// or h2c:// URL (tcp://HOST:PORT for a tcp tunnel)
	CodeBadType       = "bad_type"            // 400: a type other than http or tcp, or an option its type does not have
	CodeBadAgentToken = "bad_agent_token"     // 400: no agent token, or not one of this edge
	CodeBadBasicAuth  = "bad_basic_auth"      // 400: basic auth half given, or a user with ':'
	CodeBadCIDR       = "bad_cidr"            // 400: an allow_cidrs entry that is not a CIDR
	CodeBadHostname   = "bad_hostname"        // 400: a hostname that is not a DNS name, or under the edge's domain
	CodeHostnameTaken = "hostname_taken"      // 409: a hostname that belongs to another tunnel
	CodePortTaken     = "port_taken"          // 409: a remote_port that belongs to another tunnel
	CodeStoreError    = "store_error"         // 500: the store failed
	CodeNoStore       = "no_store"            // 404: the edge has no store, hence no API
)

// Error is the API's one error answer, {"error": {"code", "status",
// "message"}}, and the error the Client returns for any answer that is not
// a success. An answer that is not the envelope (a proxy's 502 page, say)
// gives an Error with Code "" and a Message that quotes it.
type Error struct {
	Code    string `json:"code"`
	Status  int    `json:"status"` // the HTTP status
	Message string `json:"message"`
}

// Error is the message followed by the status and code, as the sluice
// command prints it: "wrong admin token (HTTP 401, unauthorized)".
func (e *Error) Error() string {
	if e.Code == "" {
		return e.Message
	}
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// ErrorResponse is the envelope of an Error.
type ErrorResponse struct {
	Error *Error `json:"error"`
}

// ErrNoToken is returned by NewClient without a token.
var ErrNoToken = errors.New("api: no token")

// ErrOtherHost refuses to send the client's token to a URL that is not on
// its edge.
var ErrOtherHost = errors.New("api: not the edge's host: the token is not sent there")

// URLError is the error of ParseURL, ParseUpstream and ParseAddrUpstream. Its text has no
// package prefix and starts with the value, so that a caller can name the
// field before it: `upstream "ftp://x" is not an http://, https:// or
// h2c:// URL`.
type URLError struct {
	URL      string // the value given
	Upstream bool   // from ParseUpstream: h2c:// is allowed too
	Addr     string // from ParseAddrUpstream: its type, "tcp" or "udp"
}

func (e *URLError) Error() string {
	if e.Addr != "" {
		return fmt.Sprintf("%q is not a %s://HOST:PORT URL", e.URL, e.Addr)
	}
	if e.Upstream {
		return fmt.Sprintf("%q is not an http://, https:// or h2c:// URL", e.URL)
	}
	return fmt.Sprintf("%q is not an http:// or https:// URL", e.URL)
}

// WriteError answers with the error envelope: status, and code and msg
// in {"error": {"code", "status", "message"}}.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, ErrorResponse{Error: &Error{Code: code, Status: status, Message: msg}})
}

// WriteJSON answers with v as indented JSON, never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
