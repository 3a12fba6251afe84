// Package templates defines OS and application templates and keeps the
// node's cache of built OS templates.
//
// An OS template is a recipe that produces a root tree (busybox from the
// host's busybox-static, Debian by debootstrap). It is built once into
// <TemplateDir>/cache as a ready ext4 image whose top level holds the tree
// in root/, keyed by the hash of its definition:
//
//	<name>-<defhash>.img         ext4 image, sized tightly; containers copy it sparse and grow it
//	<name>-<defhash>.<size>.img  the same image grown to the default disk size (PresizedSize);
//	                             containers of that size copy it and need no resize2fs
//	<name>-<defhash>.tar.gz      the same tree as a tarball, for export
//	<name>-<defhash>.json        metadata, written last: the completion marker
//	.<name>.lock                 flock held while building, so parallel creates build once
//
// A cache entry without its .json does not exist: a failed or interrupted
// build leaves only *.tmp files and a staging mount, which the next build
// of the same name removes.
//
// Application templates are sets of Debian packages plus scripts; their
// packages are fetched once per OS template into <TemplateDir>/apps and
// installed into containers by package actuators/templates.
package templates
