#!/usr/bin/env bash
# Rules reloads under bid load (issue 4): the same open-loop personabench run
# twice against a fresh `personad --demo`, once steady and once while the
# rules change every INTERVAL seconds, alternately through the watched rules
# file (rename over write, as editors do) and through `personactl rules
# apply`. The steady run makes the same edits without applying them (the
# control; CONTROL=0: a quiet steady run). Prints both reports, the p99 ratio, errors, and how many reloads
# the server applied during the loaded run (from /metrics).
#
#   bench/reload-under-load.sh
#
# Environment:
#   RPS       open-loop rate (default 2000)
#   DURATION  each measured window (default 30s)
#   INTERVAL  seconds between rule changes (default 0.5)
#   MODE      both (default: file and API alternately), file, or api
#   CONTROL   1 (default): the steady run makes the same edits, not applied; 0: quiet
#   RESULTS   directory for the reports (default bench/results/reload-<UTC time>)
#   BIN       directory with personad, personactl, personabench (default: built)
#   BASE_PORT first of the three local ports used (default 19090)
#   WIRE      personabench's wire: grpc (default), http (personad's OpenRTB
#             HTTP wire, personabench --wire http) or http+gzip (and --gzip)
#
# Exit status 3: a window's error rate passed personabench's
# --max-error-rate (1%); both windows are still run and compared.
set -euo pipefail

# -h prints the comment above; every setting is an environment variable.
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
[[ $# -eq 0 ]] || { echo "$(basename "$0"): unexpected argument \"$1\": settings are environment variables (see $0 -h)" >&2; exit 2; }

cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"

RPS="${RPS:-2000}"
DURATION="${DURATION:-30s}"
INTERVAL="${INTERVAL:-0.5}"
MODE="${MODE:-both}"
case "$MODE" in both | file | api) ;; *) echo "reload-under-load: MODE must be both, file or api" >&2; exit 2 ;; esac
case "${WIRE:-grpc}" in grpc | http | http+gzip) ;; *) echo "reload-under-load: WIRE must be grpc, http or http+gzip, not \"$WIRE\"" >&2; exit 2 ;; esac
RESULTS="${RESULTS:-bench/results/reload-$(date -u +%Y%m%dT%H%M%SZ)}"
BASE_PORT="${BASE_PORT:-19090}"
changer=
cleanup() {
	# Under errexit: a failed kill (the changer gone) must not skip stop_server.
	[[ -z "$changer" ]] || kill "$changer" 2>/dev/null || true
	stop_server # defined by bench/lib.sh
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. bench/lib.sh
data="$work/data"
start_server reload-under-load

rules="$data/rules/demo.yaml"
[[ -f "$rules" ]] || { echo "reload-under-load: no $rules" >&2; exit 1; }
# Two versions that differ in one campaign's bid.
cp "$rules" "$work/a.yaml"
awk '!done && /bid_cpm:/ { sub(/bid_cpm: *[0-9.]+/, "bid_cpm: 9.87"); done = 1 } { print }' "$rules" >"$work/b.yaml"
cmp -s "$work/a.yaml" "$work/b.yaml" && { echo "reload-under-load: could not vary $rules" >&2; exit 1; }

reloads() { curl -fsS "http://$HTTP/metrics" | awk '/^personad_rules_reloads_total/ && /outcome="applied"/ { n += $2 } END { print n + 0 }'; }
bench() {
	local rc=0
	"$BIN/personabench" run "${target[@]}" --rps "$RPS" --duration "$DURATION" --warmup 3s \
		--progress never --out "$RESULTS/$1.json" | tee "$RESULTS/$1.txt" || rc=$?
	bench_status "$1" "$rc" # defined by bench/lib.sh
}

# change_loop DIR [control]: edit the rules every INTERVAL seconds, the
# file kind into DIR (rename over write), the API kind through personactl
# rules apply; as the control, personactl only parses and validates the
# file locally (`rules validate --local`).
change_loop() {
	local dir="$1" control="${2:-}" i=0 v use
	while :; do
		v=a
		((i % 2)) && v=b
		use=file
		case "$MODE" in
		api) use=api ;;
		both) ((i % 4 < 2)) || use=api ;;
		esac
		if [[ $use == file ]]; then
			cp "$work/$v.yaml" "$dir/.demo.yaml.tmp" && mv -f "$dir/.demo.yaml.tmp" "$dir/demo.yaml"
		elif [[ -n $control ]]; then
			"$BIN/personactl" rules validate --local "$work/$v.yaml" >/dev/null
		else
			"$BIN/personactl" --addr "$GRPC" rules apply "$work/$v.yaml" >/dev/null
		fi
		i=$((i + 1))
		sleep "$INTERVAL"
	done
}

# The steady window, the control: the same edits without a reload (file
# edits go to a directory the server does not watch; personactl parses and
# validates locally instead of applying), so both windows carry the edits'
# own cost on this machine (cp, mv, personactl, page cache) and the
# difference is the server's reloads. CONTROL=0 leaves the steady window
# quiet instead.
if [[ "${CONTROL:-1}" != 0 ]]; then
	mkdir -p "$work/unwatched"
	echo "== steady (the same edits, not applied): $RPS rps for $DURATION" >&2
	change_loop "$work/unwatched" control &
	changer=$!
else
	echo "== steady: $RPS rps for $DURATION" >&2
fi
bench steady
if [[ -n "$changer" ]]; then
	kill "$changer" 2>/dev/null
	wait "$changer" 2>/dev/null || true
	changer=
fi

echo "== reloading every ${INTERVAL}s ($MODE): $RPS rps for $DURATION" >&2
before=$(reloads)
change_loop "$data/rules" &
changer=$!
bench reloading
kill "$changer" 2>/dev/null
wait "$changer" 2>/dev/null || true
changer=
after=$(reloads)

p99() { grep -o '"p99": *[0-9]*' "$1" | head -1 | grep -o '[0-9]*$'; }
errs() { tr -d '\n ' <"$1" | grep -o '"errors":{[^}]*}' | head -1; }
s=$(p99 "$RESULTS/steady.json")
r=$(p99 "$RESULTS/reloading.json")
echo
echo "reloads applied during the loaded run: $((after - before))"
echo "p99 steady ${s} µs, during reloads ${r} µs: ratio $(awk -v a="$r" -v b="$s" 'BEGIN { printf "%.2f", a / b }')"
echo "errors steady $(errs "$RESULTS/steady.json"), during reloads $(errs "$RESULTS/reloading.json")"
echo "reports: $RESULTS" >&2
bounds_broken
