// Package golden compares test output with files under testdata. It
// imports nothing of ours, so any package's tests can use it.
package golden

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Check compares got with testdata/name, first rewriting the file when
// update is set (go test -update). note says what a difference means.
func Check(t testing.TB, name string, got []byte, update bool, note string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden %s: %v (run go test -update)", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed%s:\ngot  %q\nwant %q", name, note, got, want)
	}
}
