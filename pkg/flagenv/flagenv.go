// Package flagenv gives every flag an environment variable fallback:
// CHAT_ plus the flag name in upper snake case ("-http.addr" ↔ CHAT_HTTP_ADDR).
// Precedence: flag, then environment, then the flag's default.
package flagenv

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Prefix starts every environment variable name.
const Prefix = "CHAT_"

// EnvName returns the environment variable for a flag name.
func EnvName(flagName string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return Prefix + strings.ToUpper(r.Replace(flagName))
}

// Parse parses args into fs, then sets every flag that was not given on the
// command line from its environment variable, if that is set. lookup is
// os.LookupEnv in production.
func Parse(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := lookup(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s=%q: %w", EnvName(f.Name), v, e)
			}
		}
	})
	return err
}

// ParseOS is Parse with os.LookupEnv.
func ParseOS(fs *flag.FlagSet, args []string) error { return Parse(fs, args, os.LookupEnv) }

// Print writes every flag's effective value, one "name=value" per line,
// sorted, with the values of flags whose name is in secret replaced.
func Print(w io.Writer, fs *flag.FlagSet, secret ...string) {
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		v := f.Value.String()
		for _, s := range secret {
			if f.Name == s && v != "" {
				v = "<redacted>"
			}
		}
		lines = append(lines, fmt.Sprintf("%s=%s", f.Name, v))
	})
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// Usage sets fs.Usage to print the flags with their environment variables.
func Usage(fs *flag.FlagSet, header string) {
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintln(out, header)
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  -%s (env %s, default %q)\n    \t%s\n", f.Name, EnvName(f.Name), f.DefValue, f.Usage)
		})
	}
}
