#!/usr/bin/env bash
# Segment upload throughput end to end (issue 3: new ids >= 5M ids/s,
# known ids >= 10M ids/s, through personactl): each round starts a fresh
# `personad --demo` and uploads, with `personactl segments upload`, each to
# a segment of its own:
#
#   1. new       IDS new ids
#   2. known     the same file again (ids in the order they were interned)
#   3. shuffled  the same ids in another order (shuf, fixed seed)
#   4. new+      IDS more new ids (into a store of ~IDS users)
#   5. new++     IDS more new ids (into ~2×IDS users)
#
# and prints personactl's ids/s and the server's CPU seconds (user +
# system, from /proc) for each. With BINS naming several build
# directories, each round runs every build in turn, so that builds are
# compared in the same minutes of this noisy machine.
#
#   bench/upload-rates.sh
#   BINS="/tmp/old /tmp/new" ROUNDS=3 bench/upload-rates.sh
#
# Environment:
#   IDS        ids per file (default 10000000)
#   ROUNDS     rounds (default 3)
#   BINS       build directories with personad and personactl (default:
#              one, built from this checkout)
#   RESULTS    directory for the report (default bench/results/rates-<UTC time>)
#   BASE_PORT  first of the two local ports used (default 19190)
#   PAUSE      seconds to wait before starting each server (default 0).
#              A VM that takes freed memory back (virtio-balloon free page
#              reporting, seconds after it is freed) makes a server started
#              at once after another faster, reusing the memory the other
#              freed, than one started later: BENCHMARKS.md §2
#   RESERVES   values of personad's --segments-reserve-users to run each
#              build with, in turn (default 0: none), e.g. "0 40000000"
set -euo pipefail

# -h prints the comment above; every setting is an environment variable.
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
[[ $# -eq 0 ]] || { echo "$(basename "$0"): unexpected argument \"$1\": settings are environment variables (see $0 -h)" >&2; exit 2; }

cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"

IDS="${IDS:-10000000}"
ROUNDS="${ROUNDS:-3}"
RESULTS="${RESULTS:-bench/results/rates-$(date -u +%Y%m%dT%H%M%SZ)}"
BASE_PORT="${BASE_PORT:-19190}"
bins=()
if [[ -n "${BINS:-}" ]]; then
	read -r -d '' -a bins <<<"$BINS" || true # separated by any white space
	BIN="${bins[0]}"                         # so that lib.sh builds nothing
fi
trap stop_server EXIT # defined by bench/lib.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh
if ((${#bins[@]} == 0)); then
	bins=("$BIN")
fi

files="$work/files"
mkdir -p "$files"
seq -f 'r1%09.0f' 0 $((IDS - 1)) >"$files/new"
cp "$files/new" "$files/known"
shuf --random-source=<(yes) "$files/new" >"$files/shuffled"
seq -f 'r2%09.0f' 0 $((IDS - 1)) >"$files/new+"
seq -f 'r3%09.0f' 0 $((IDS - 1)) >"$files/new++"
uploads=(new known shuffled new+ new++)

report="$RESULTS/report.txt"
{
	echo "# bench/upload-rates.sh $(date -u +%FT%TZ): $IDS ids per file, $ROUNDS rounds"
	echo "# M ids/s (personactl's summary) and server CPU s, per upload"
	printf '%-4s %-24s' round build
	printf ' %18s' "${uploads[@]}"
	echo
} | tee "$report"

server_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$server/stat"; }

read -r -a reserves <<<"${RESERVES:-0}"
for round in $(seq 1 "$ROUNDS"); do
	for b in "${bins[@]}"; do
		for reserve in "${reserves[@]}"; do
			BIN="$b"
			rm -rf "$work/data"
			sleep "${PAUSE:-0}"
			start_server "upload-rates" PERSONAD_SEGMENTS_RESERVE_USERS="$reserve"
			label="$b"
			if ((${#reserves[@]} > 1 || reserve > 0)); then
				label+=" reserve=$reserve"
			fi
			line="$(printf '%-4s %-24s' "$round" "$label")"
			n=0
			for f in "${uploads[@]}"; do
				n=$((n + 1))
				before="$(server_cpu)"
				"$BIN/personactl" --addr "$GRPC" segments upload --facet industry --value "u$n" "$files/$f" \
					>"$RESULTS/personactl.out" 2>&1 || {
					echo "upload $f failed:" >&2
					cat "$RESULTS/personactl.out" >&2
					exit 1
				}
				after="$(server_cpu)"
				rate="$(grep -o 'ids_per_s=[0-9]*' "$RESULTS/personactl.out" | cut -d= -f2)"
				line+="$(awk -v r="$rate" -v a="$after" -v b="$before" 'BEGIN { printf " %7.2f %5.2fs cpu", r / 1e6, a - b }')"
			done
			kill -9 "$server"
			wait "$server" 2>/dev/null || true
			echo "$line" | tee -a "$report"
		done
	done
done
echo "report: $report"
