package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
)

// HashSchema prefixes every spec hash; bump it when the meaning of a
// field changes, so stored hashes from older versions never compare equal.
const HashSchema = "v1"

// Hash returns a stable digest of what the container means: the same for
// any file that says the same thing, whatever its format, key order,
// comments or formatting. Source, Positions, Format and Unknown are not
// part of it.
func (c *Container) Hash() string {
	n := *c
	n.Source, n.Positions, n.Format, n.Unknown = Pos{}, nil, "", nil
	n.Templates = slices.Clone(n.Templates)
	n.Sysctl = maps.Clone(n.Sysctl)
	n.Devices = slices.Clone(n.Devices)
	n.Init = slices.Clone(n.Init)
	n.Network.Interfaces = slices.Clone(n.Network.Interfaces)
	normalize(&n)
	// encoding/json sorts map keys, so sysctl order does not matter.
	b, err := json.Marshal(&n)
	if err != nil {
		// Every field of Container marshals; this cannot happen.
		return HashSchema + ":error"
	}
	sum := sha256.Sum256(b)
	return HashSchema + ":" + hex.EncodeToString(sum[:])
}
