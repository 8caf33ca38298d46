package flagenv

import (
	"flag"
	"io"
	"testing"
)

func TestEnvName(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"http.addr", "CHAT_HTTP_ADDR"},
		{"data.dir", "CHAT_DATA_DIR"},
		{"edge.drain-duration", "CHAT_EDGE_DRAIN_DURATION"},
	} {
		if got := EnvName(tc.name); got != tc.want {
			t.Errorf("EnvName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParsePrecedence(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, "def"},
		{"env", nil, map[string]string{"CHAT_HTTP_ADDR": "env"}, "env"},
		{"flag wins", []string{"-http.addr=flag"}, map[string]string{"CHAT_HTTP_ADDR": "env"}, "flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			v := fs.String("http.addr", "def", "")
			err := Parse(fs, tc.args, func(k string) (string, bool) { s, ok := tc.env[k]; return s, ok })
			if err != nil {
				t.Fatal(err)
			}
			if *v != tc.want {
				t.Errorf("http.addr = %q, want %q", *v, tc.want)
			}
		})
	}
}

func TestParseBadEnv(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Int("n", 1, "")
	err := Parse(fs, nil, func(k string) (string, bool) { return "x", k == "CHAT_N" })
	if err == nil {
		t.Fatal("Parse with CHAT_N=x: got nil error, want one")
	}
}
