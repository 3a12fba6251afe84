package cgroups

import (
	"math"

	"vzd/spec"
)

// DefaultCPUPeriod is the CFS period used when Resources.CPUPeriod is zero:
// the kernel's own default, 100 ms.
const DefaultCPUPeriod = 100000

// FromSpec turns a container's limits into kernel terms. blockDev is the
// "major:minor" of the container's loop device, or "" when it has none
// (then no I/O throttling is applied).
//
// Mappings:
//   - CPU count n and CPU limit p% both cap CPU time per CFS period: quota
//     = n × period and p/100 × period; with both set the smaller wins.
//     The count is a quota, not a cpuset: a container with count 2 may run
//     on any CPU, 2 CPUs' worth at a time. CPU.Mask is the cpuset.
//   - CPU units stay on the legacy CPUUNITS scale in Resources; each driver
//     maps them (see sharesFromUnits, weightFromUnits).
//   - RAM, swap, processes, IOPS and bytes/s pass through; zero is
//     "unlimited" in both places.
//   - Devices are resolved to major:minor by stat'ing the host node; a
//     device that cannot be resolved is left out (DeviceRules reports
//     why, for validation).
func FromSpec(c *spec.Container, blockDev string) Resources {
	r := Resources{
		CPUPeriod: DefaultCPUPeriod,
		CPUWeight: c.CPU.Units,
		CPUs:      c.CPU.Mask,
		Memory:    c.Memory.RAM,
		Swap:      c.Memory.Swap,
		Pids:      c.Processes,
	}
	var quota int64
	if c.CPU.Count > 0 {
		quota = int64(c.CPU.Count) * DefaultCPUPeriod
	}
	if c.CPU.Limit > 0 {
		q := int64(math.Round(c.CPU.Limit / 100 * DefaultCPUPeriod))
		// The kernel refuses quotas below 1 ms.
		q = max(q, 1000)
		if quota == 0 || q < quota {
			quota = q
		}
	}
	r.CPUQuota = quota
	if blockDev != "" && (c.Disk.IOPSLimit > 0 || c.Disk.IOLimit > 0) {
		r.BlockDevice = blockDev
		r.IOPS = c.Disk.IOPSLimit
		r.BPS = c.Disk.IOLimit
	}
	for _, d := range c.Devices {
		if rule, err := DeviceRuleFor(d); err == nil {
			r.Devices = append(r.Devices, rule)
		}
	}
	return r
}

// Shares and weight bounds of the kernel.
const (
	minShares = 2
	maxShares = 262144
	minWeight = 1
	maxWeight = 10000
)

// sharesFromUnits maps legacy CPUUNITS to v1 cpu.shares: units × 1024 /
// 1000, clamped to the kernel's [2, 262144]. The factor makes the default
// 1000 units equal to the kernel's default 1024 shares, so a container
// with default units weighs the same as any other cgroup nobody tuned
// (host services, other runtimes' containers), which is what an operator
// who never wrote CPUUNITS expects. 0 means the default.
func sharesFromUnits(units uint64) uint64 {
	if units == 0 {
		units = spec.DefaultCPUUnits
	}
	s := (units*1024 + 500) / 1000
	return min(max(s, minShares), maxShares)
}

// unitsFromShares is the inverse of sharesFromUnits, rounded, for Read.
func unitsFromShares(shares uint64) uint64 {
	return (shares*1000 + 512) / 1024
}

// weightFromUnits maps legacy CPUUNITS to v2 cpu.weight through the shares
// value v1 would use. runc's conversion is linear from [2, 262144] shares
// onto [1, 10000] weight, which sends the default 1024 shares to weight 39
// instead of the default 100, so a container with default units would get
// less than a third of an untuned sibling. This mapping is linear in the
// logarithms instead, piecewise through three anchors: 2 → 1, 1024 → 100
// (default to default) and 262144 → 10000. Below 1024 shares every factor
// of two in shares is 2/9 of a decade of weight, above it 2/8 of a decade.
func weightFromUnits(units uint64) uint64 {
	x := math.Log2(float64(sharesFromUnits(units))) // 1 .. 18
	var y float64                                   // log10 of the weight: 0 .. 4
	if x <= 10 {
		y = 2 * (x - 1) / 9
	} else {
		y = 2 + 2*(x-10)/8
	}
	w := uint64(math.Round(math.Pow(10, y)))
	return min(max(w, minWeight), maxWeight)
}

// unitsFromWeight inverts weightFromUnits, for Read: the smallest units
// value whose weight is w, so that a Read result maps back to the weight
// read (weightFromUnits is monotonic; several units values may share a
// weight, and Drift compares weights, not units).
func unitsFromWeight(w uint64) uint64 {
	y := math.Log10(float64(w))
	var x float64
	if y <= 2 {
		x = y*9/2 + 1
	} else {
		x = (y-2)*8/2 + 10
	}
	u := unitsFromShares(uint64(math.Round(math.Exp2(x))))
	// Walk to an exact preimage: the rounding above may miss by a little.
	for u > 1 && weightFromUnits(u-1) >= w {
		u--
	}
	for u < 1000000 && weightFromUnits(u) < w {
		u++
	}
	return u
}
