// Package runtime starts, supervises, stops and enters system containers:
// a container's own init (busybox init, systemd, …) in new user, pid,
// mount, uts, ipc, net and cgroup namespaces, pivot_root'ed into the
// container's mounted root. docs/RUNTIME.md has the design and the reasons.
//
//	agent (Runtime.Start)            opens the console pty, a socketpair
//	  └─ vzd [_VZD_ROLE=supervise]   C constructor, never reaches Go:
//	       └─ supervisor (C)         double fork + setsid, clone(NEWUSER|NEWPID|…),
//	            │                    uid/gid maps, report pids to the agent, then
//	            │                    reap init, console → log (capped), exit.json,
//	            │                    move to vzd-supervisors; ~150 KiB PSS
//	            └─ init stage (C)    the clone child itself (no exec); waits on
//	                                 the socket while the agent moves it
//	                                 into the container's cgroups and sends the
//	                                 root (open_tree clone + MOUNT_ATTR_IDMAP)
//	                                 with a program built in Go (init_linux.go):
//	                                 unshare(NEWCGROUP), move_mount the root,
//	                                 /proc /sys(ro) /dev devpts /run …,
//	                                 hostname, sysctls, pivot_root, capability
//	                                 bounding set, exec init; the agent writes
//	                                 runtime.json when the socket closes on exec
//
// Nothing here lives in the agent: a Runtime reads records under each
// container's private area ($VE_PRIVATE/.vzd/runtime.json, exit.json,
// console.log) and verifies them against /proc (pid and start time) and
// the container's cgroup, so a restarted agent adopts running containers
// as they are, and killing the agent touches none.
//
// Re-executed roles are chosen by the environment variable _VZD_ROLE and
// run entirely in nsexec.c, from an ELF constructor, before the Go runtime
// starts: setns into a user and mount namespace needs a single-threaded
// process, the supervisor stays small without a Go heap, and no Go runtime
// start sits on the start path. Every binary that starts containers must
// link this package and be built with cgo; Main is kept as the hook for
// re-executed roles and currently has none to run in Go.
package runtime
