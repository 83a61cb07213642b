package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/api"
)

// The user's config file: what "sluice login" stores (the edge, its token,
// the CA that signed its certificate) and the tunnels "sluice start"
// starts. JSON, so that the standard library reads it; unknown fields are
// errors, so that a typo does not go unnoticed. It holds a secret: it is
// written with mode 0600 in a directory with mode 0700.
//
//	{
//	  "edge": "https://tunnel.example.com",
//	  "token": "3b0f...",
//	  "ca": "/home/me/.config/sluice/edge-ca.pem",
//	  "tunnels": {
//	    "web": {"upstream": "3000"},
//	    "api": {"upstream": "http://127.0.0.1:8000", "host_header": "rewrite",
//	            "basic_auth": "me:secret", "allow": ["10.0.0.0/8"]}
//	  }
//	}

// configHelp says where the defaults come from, in the help of the
// commands that read the file.
const configHelp = `Defaults: --edge, the token and --ca come from the config file that
"sluice login" writes ($XDG_CONFIG_HOME/sluice/config.json, by default
~/.config/sluice/config.json; --config FILE for another), when the
flags (and --token-file, $SLUICE_TOKEN) do not give them. The flags win.
The stored token and CA are used only for the edge stored with them.
`

// userConfig is the config file's content.
type userConfig struct {
	Edge    string                  `json:"edge,omitempty"`
	Token   string                  `json:"token,omitempty"`
	CA      string                  `json:"ca,omitempty"` // a PEM file's absolute path
	Tunnels map[string]tunnelConfig `json:"tunnels,omitempty"`
}

// tunnelConfig is a tunnel of the config file, started by "sluice start";
// its fields are those of "sluice http"'s flags.
type tunnelConfig struct {
	Upstream         string   `json:"upstream"` // PORT or URL, as sluice http's argument
	HostHeader       string   `json:"host_header,omitempty"`
	Protocol         string   `json:"protocol,omitempty"`
	BasicAuth        string   `json:"basic_auth,omitempty"` // USER:PASSWORD
	Allow            []string `json:"allow,omitempty"`
	UpstreamCA       string   `json:"upstream_ca,omitempty"`
	UpstreamInsecure bool     `json:"upstream_insecure,omitempty"`
}

// defaultConfigPath is $XDG_CONFIG_HOME/sluice/config.json (by default
// ~/.config/sluice/config.json; os.UserConfigDir elsewhere than Linux).
func defaultConfigPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("config file: %w", err)
	}
	return filepath.Join(dir, "sluice", "config.json"), nil
}

// configFlag declares --config FILE on fs. The returned function, called
// after parsing, gives the file's path and whether --config named it.
func configFlag(fs *flag.FlagSet) func() (path string, given bool, err error) {
	file := fs.String("config", "", "the config file (default $XDG_CONFIG_HOME/sluice/config.json, or ~/.config/sluice/config.json)")
	return func() (string, bool, error) {
		if *file != "" {
			return *file, true, nil
		}
		p, err := defaultConfigPath()
		return p, false, err
	}
}

// loadConfig reads the config file at path. A file that does not exist is
// an empty config unless must says it was asked for.
func loadConfig(path string, must bool) (*userConfig, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !must {
		return &userConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var c userConfig
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if c.Edge != "" {
		if _, err := api.ParseURL(c.Edge); err != nil {
			return nil, fmt.Errorf("config file %s: edge %w", path, err)
		}
	}
	return &c, nil
}

// save writes c to path, with mode 0600, in a directory that only its
// owner may enter (0700), replacing the file at once.
func (c *userConfig) save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	f, err := os.CreateTemp(dir, ".config-*.json")
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, nothing
	if err := f.Chmod(0o600); err == nil {
		_, err = f.Write(append(b, '\n'))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return nil
}

// forEdge returns the stored token and CA file when edgeURL is the stored
// edge (the same scheme, host and port): a token is never sent to another
// edge than the one it was stored for.
func (c *userConfig) forEdge(edgeURL string) (token, ca string) {
	if c.Edge == "" || !sameOrigin(c.Edge, edgeURL) {
		return "", ""
	}
	return c.Token, c.CA
}

// sameOrigin reports whether two edge URLs have the same scheme, host and
// port.
func sameOrigin(a, b string) bool {
	ua, err1 := api.ParseURL(a)
	ub, err2 := api.ParseURL(b)
	return err1 == nil && err2 == nil && strings.EqualFold(ua.Scheme, ub.Scheme) && strings.EqualFold(ua.Host, ub.Host)
}

// edgeDefaults are an agent's edge, token and CA file, from the flags or,
// when they do not give them, the config file.
type edgeDefaults struct {
	edge, token, ca string
	edgeGiven       bool // --edge was given (even empty: the embedded edge)
}

// resolve fills what the flags left empty from c.
func (d *edgeDefaults) resolve(c *userConfig) {
	if !d.edgeGiven && d.edge == "" {
		d.edge = c.Edge
	}
	token, ca := c.forEdge(d.edge)
	if d.token == "" {
		d.token = token
	}
	if d.ca == "" {
		d.ca = ca
	}
}

// tunnelNames returns the config's tunnel names, sorted.
func (c *userConfig) tunnelNames() []string {
	var names []string
	for n := range c.Tunnels {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
