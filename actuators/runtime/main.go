package runtime

import "os"

// Main runs the role of a re-executed vzd (the container's init stage)
// and never returns in that case; otherwise it returns false at once. Call
// it first thing in main and in TestMain of any test binary that starts
// containers. (The supervisor and the exec helper never reach Go: nsexec.c
// runs them before the Go runtime starts.)
func Main() bool {
	switch os.Getenv(envRole) {
	case roleInit:
		initStage()
	default:
		return false
	}
	os.Exit(1)
	return true
}
