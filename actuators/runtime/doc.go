// Package runtime starts, supervises, stops and enters system containers:
// a container's own init (busybox init, systemd, …) in new user, pid,
// mount, uts, ipc, net and cgroup namespaces, pivot_root'ed into the
// container's mounted root. docs/RUNTIME.md has the design and the reasons.
//
//	agent (Runtime.Start)
//	  └─ vzd [_VZD_ROLE=supervise]   C constructor: fork, parent exits, setsid
//	       └─ supervisor (Go)        vzd-supervisors cgroup, console pty,
//	            │                    clone(NEWUSER|NEWPID|…) with uid/gid maps,
//	            │                    init into the container's cgroups,
//	            │                    root: open_tree clone + MOUNT_ATTR_IDMAP,
//	            │                    record → report to agent → exec:
//	            ├─ reaper (C only)   waitpid init, console → log (capped),
//	            │                    exit.json; no Go runtime, ~150 KiB PSS
//	            └─ init stage (Go)   unshare(NEWCGROUP), move_mount root,
//	                                 /proc /sys(ro) /dev devpts /run …,
//	                                 hostname, sysctls, pivot_root,
//	                                 capability bounding set, exec init
//
// Nothing here lives in the agent: a Runtime reads records under each
// container's private area ($VE_PRIVATE/.vzd/runtime.json, exit.json,
// console.log) and verifies them against /proc (pid and start time) and
// the container's cgroup, so a restarted agent adopts running containers
// as they are, and killing the agent touches none.
//
// Re-executed roles are chosen by the environment variable _VZD_ROLE. The
// exec helper and the reaper run entirely in nsexec.c, from an ELF
// constructor, before the Go runtime starts: setns into a user and mount
// namespace needs a single-threaded process, and the reaper stays small
// without a Go heap. Every binary that starts containers must call Main
// first thing (cmd/vzd main, and TestMain of test packages), and must be
// built with cgo.
package runtime
