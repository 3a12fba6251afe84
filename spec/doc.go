// Package spec turns the files of a config directory (HCL and legacy
// Virtuozzo/OpenVZ ve.conf) into validated container specs. It has no side
// effects beyond reading files.
//
// Both formats decode into one Container (two front ends, hcl.go and
// legacy.go, over one model); validate.go checks it, one small check per
// concern; load.go reads a whole directory the way the agent does
// (ignored names, StrictModes-like refusals, conflicts between files);
// hash.go gives a container's meaning a stable digest; write.go turns a
// container back into HCL (vzd convert). docs/FORMATS.md describes the
// formats for operators.
//
// Entry points:
//   - Load, LoadWithGlobal, LoadFS: a config directory into a Set.
//   - LoadGlobal, ParseGlobal: vz.conf or a global HCL file.
//   - ParseFile: one file on its own (vzd validate FILE); ParseHCL and
//     ParseLegacy are the front ends without validation.
//   - Validate, Conflicts: the single-container and cross-container checks.
//   - (*Container).Hash, WriteHCL.
package spec

import "fmt"

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
