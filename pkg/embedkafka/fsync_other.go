//go:build !linux

package embedkafka

import "os"

func fdatasync(f *os.File) error { return f.Sync() }

// unlinked cannot tell on this platform; the committer then keeps syncing
// the file it opened, which is right unless kfake replaced the file.
func unlinked(*os.File) bool { return false }
