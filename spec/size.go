package spec

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Sizes are binary everywhere, as in vzctl: "1G", "1GB" and "1GiB" all mean
// 2^30 bytes. Fractions are allowed ("2.2G", as in the OpenVZ samples) and
// are rounded down to a whole byte.

var errUnlimited = errors.New("unlimited")

// unitShift maps a unit letter to its power of 1024.
var unitShift = map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40, 'P': 50, 'E': 60}

// parseSize parses "512M", "1.5G", "10GiB", "1TB" or a plain number; a plain
// number is multiplied by plainUnit (1 for bytes, 4096 for legacy pages,
// 1024 for legacy KiB). "unlimited" returns errUnlimited so callers decide
// what it means.
func parseSize(s string, plainUnit uint64) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	if strings.EqualFold(s, "unlimited") {
		return 0, errUnlimited
	}
	num, unit := s, ""
	if i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }); i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	mult := plainUnit
	if unit != "" {
		u := strings.ToUpper(unit)
		if u == "B" {
			mult = 1
		} else {
			// "G", "GB" and "GiB" are all 2^30.
			u = strings.TrimSuffix(u, "B")
			if len(u) == 2 && u[1] == 'I' {
				u = u[:1]
			}
			var shift uint
			ok := len(u) == 1
			if ok {
				shift, ok = unitShift[u[0]]
			}
			if !ok {
				return 0, fmt.Errorf("size %q: unknown unit %q (use K, M, G, T or P)", s, unit)
			}
			mult = 1 << shift
		}
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: not a number", s)
		}
		if mult != 0 && n > math.MaxUint64/mult {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, fmt.Errorf("size %q: not a number", s)
	}
	v := f * float64(mult)
	if v >= math.MaxUint64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return uint64(v), nil
}

// formatSize writes a byte count with the largest binary unit that divides
// it exactly, so that parseSize(formatSize(n)) == n.
func formatSize(n uint64) string {
	if n == 0 {
		return "0"
	}
	units := []struct {
		suffix string
		shift  uint
	}{{"P", 50}, {"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}}
	for _, u := range units {
		if n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

// parsePercent parses "150%", "150" or "1.5" style CPU limits into percent
// of one CPU. A bare number is percent, as in legacy CPULIMIT.
func parsePercent(s string) (float64, error) {
	t := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("limit %q: expected a percentage such as \"150%%\"", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("limit %q: negative", s)
	}
	return f, nil
}
