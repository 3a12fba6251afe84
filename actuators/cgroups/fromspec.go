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

// weightFromUnits maps legacy CPUUNITS to v2 cpu.weight: units / 10,
// clamped to the kernel's [1, 10000]. runc converts v1 shares to weight
// linearly from [2, 262144] onto [1, 10000] (1 + (shares-2) × 9999 /
// 262142), which keeps the ends but sends the default 1024 shares to
// weight 39, not the default 100: a container with default units would
// get less than half of an untuned sibling. Units are a relative weight,
// so the mapping that keeps their meaning is proportional: default to
// default (1000 → 100), and twice the units is twice the weight, exactly
// for 10..100000 units, which covers what vzctl configurations use
// (CPUUNITS 8..500000, in practice 250..10000s). 0 means the default.
func weightFromUnits(units uint64) uint64 {
	if units == 0 {
		units = spec.DefaultCPUUnits
	}
	return min(max((units+5)/10, minWeight), maxWeight)
}

// unitsFromWeight inverts weightFromUnits, for Read.
func unitsFromWeight(w uint64) uint64 { return w * 10 }
