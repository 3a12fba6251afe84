#!/usr/bin/env bash
# Runs every scripts/bench-*.sh (each writes docs/bench/<area>.md) and
# assembles docs/BENCHMARKS.md from them. Run as root: `make bench`.
# BENCH_ONLY=image,network runs a subset; --assemble only rebuilds
# docs/BENCHMARKS.md from the sections already written.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/bench
failed=()
[ "${1:-}" = --assemble ] || for s in scripts/bench-*.sh; do
	area=$(basename "$s" .sh); area=${area#bench-}
	if [ -n "${BENCH_ONLY:-}" ] && [[ ",$BENCH_ONLY," != *",$area,"* ]]; then continue; fi
	echo "== bench $area"
	if ! timeout 900 "$s"; then
		echo "bench $area failed" >&2
		failed+=("$area")
	fi
done
{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` (scripts/bench.sh runs every scripts/bench-*.sh; each section"
	echo "below is one script's output, with the exact commands it ran). Machine: $(nproc) CPUs,"
	echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)."
	echo "The machines are noisy: compare the ratios against the peer measured in the same run."
	for f in docs/bench/*.md; do
		echo
		# One heading level down, outside code blocks.
		awk '/^```/ {code = !code} !code && /^#/ {$0 = "#" $0} {print}' "$f"
	done
} > docs/BENCHMARKS.md
echo "wrote docs/BENCHMARKS.md"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}" >&2; exit 1; }
