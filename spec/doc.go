// Package spec turns the files of a config directory (HCL and legacy
// Virtuozzo/OpenVZ ve.conf) into validated container specs. It has no side
// effects beyond reading files.
package spec

import "fmt"

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
