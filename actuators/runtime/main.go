package runtime

// Main is kept for the callers' sake (cmd/vzd main, TestMain of test
// packages): every re-executed role of vzd now runs in nsexec.c before the
// Go runtime starts, so it always returns false. Binaries that start
// containers must still link this package (its cgo constructor) and be
// built with cgo.
func Main() bool { return false }
