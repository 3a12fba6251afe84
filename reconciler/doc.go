// Package reconciler is vzd's control loop: it takes snapshots of the
// desired state (package spec), observes the node through a Node, computes
// a plan of small idempotent steps per container and runs it, in parallel
// across containers and in order within one.
//
//	triggers (fsnotify, resync timer, SIGHUP, CLI)
//	        │  "look again"
//	        ▼
//	   load spec.Set ──▶ desired (last good kept for failed files)
//	        │
//	        ▼  enqueue every known ID (keyed, coalescing queue)
//	   worker: observe ─▶ Plan(desired, record, actual) ─▶ steps ─▶ record
//
// It is level-triggered: every pass re-reads all files and observes the
// whole node, so a missed event, a restart or a crash never leaves the node
// wrong for longer than one resync interval.
package reconciler
