// Package dedup is vzd's shared file cache: the Virtuozzo pfcache idea built
// on a mainline kernel with overlayfs metacopy files and data-only lower
// layers.
//
// A scan (Scan, or Schedule on a cron schedule) walks the containers' base
// trees, hashes eligible files with SHA1 (the digest is kept in the
// trusted.vzd.sha1 xattr with the size and mtime it was taken at, so an
// unchanged file is never hashed twice), copies files that several
// containers share into a content-addressed store, and writes for each
// container a META tree of sparse stubs that carry the file's metadata and
// a redirect to the store's object. At its next mount (Mounter.MountRoot)
// the container's root becomes
//
//	overlay(upper=FS/delta, work=FS/work, lower=FS/meta:FS/root::STORE/objects)
//
// so every container reads the one object: one page-cache copy and one set
// of reads. The container's image (FS) keeps all its files: without the
// store the same image mounts as overlay(upper=FS/delta, lower=FS/root) and
// shows the same tree.
//
// An unprivileged container gets the same layers with its ids: an overlay
// cannot be idmapped, so at start the runtime has Mounter.ShiftRoot build
// it from idmapped lower layers over a delta kept owned by the container's
// host ids. See docs/DEDUP.md.
package dedup
