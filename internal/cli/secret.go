package cli

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Secrets (agent and admin tokens) are given on the command line, where
// ps and /debug/pprof/cmdline show them, or better in a file or the
// environment. Every command that takes a token reads it with Secret, so
// that the order is the same everywhere: the flag, then the file flag,
// then the environment variable.

// MinSecretLen is the length under which a token is called weak.
const MinSecretLen = 16

// Secret is a credential's flags: --NAME VALUE and --NAME-file PATH, with
// an environment variable as the fallback.
type Secret struct {
	fs   *flag.FlagSet
	name string // the flag, such as "token"
	env  string // such as "SLUICE_TOKEN"
	val  *string
	file *string
}

// SecretFlag declares --name and --name-file on fs; usage says what the
// credential is.
func SecretFlag(fs *flag.FlagSet, name, env, usage string) *Secret {
	s := &Secret{fs: fs, name: name, env: env}
	s.val = fs.String(name, "", usage+"; default $"+env+" (a flag's value shows in ps: prefer --"+name+"-file or $"+env+")")
	s.file = fs.String(name+"-file", "", "file whose only line is the "+name+", instead of --"+name)
	return s
}

// Value returns the credential: the flag's value, the file's line, or the
// environment variable's value, whichever comes first; "" if none is
// given. from says where it came from ("--token", "--token-file",
// "$SLUICE_TOKEN"). Both flags at once are a usage error.
func (s *Secret) Value() (value, from string, err error) {
	set := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case set[s.name] && set[s.name+"-file"]:
		return "", "", Usagef("--%s and --%s-file are one credential: give one", s.name, s.name)
	case set[s.name]:
		return *s.val, "--" + s.name, nil
	case set[s.name+"-file"]:
		v, err := ReadSecretFile(*s.file)
		return v, "--" + s.name + "-file", err
	}
	if v := os.Getenv(s.env); v != "" {
		return v, "$" + s.env, nil
	}
	return "", "", nil
}

// ReadSecretFile returns the one line of the file at path, without the
// surrounding white space.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	if strings.ContainsAny(v, "\r\n") {
		return "", fmt.Errorf("secret file %s has more than one line", path)
	}
	return v, nil
}

// WarnWeak writes a warning to w when secret, from where (such as
// "--token"), is shorter than MinSecretLen. The secret itself is never
// written.
func WarnWeak(w io.Writer, where, secret string) {
	if secret != "" && len(secret) < MinSecretLen {
		fmt.Fprintf(w, "sluice: warning: the token of %s has %d characters: anyone who guesses it can use it; use %d or more random ones (sluice tokens create makes them)\n",
			where, len(secret), MinSecretLen)
	}
}
