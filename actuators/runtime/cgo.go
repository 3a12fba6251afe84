package runtime

// #cgo CFLAGS: -Wall -O2
import "C"

// The import above links nsexec.c, whose ELF constructor runs the early
// roles (supervise, nsexec, reap) before the Go runtime starts threads.
