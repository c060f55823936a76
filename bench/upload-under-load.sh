#!/usr/bin/env bash
# Segment uploads under bid load (issue 3: decision p99 rises at most 20%
# while a 10M-id upload runs): against one fresh `personad --demo`, ROUNDS
# rounds of two open-loop personabench windows of DURATION each, one steady
# and one during which `personactl segments upload` sends UPLOAD_IDS new
# user ids (a new prefix each round, so every id is new), started when the
# window's measurement starts. Prints each window's p50 / p99, the p99
# ratio, errors, and how long each upload took (from personactl's
# summary): the upload should fill most of its window, or the window's p99
# is the steady one's.
#
# Everything runs on this machine: personactl and the load generator take
# CPU from the server as they would not from another machine. UPLOAD_NICE
# and BENCH_NICE lower or raise their priority to approximate that (say
# UPLOAD_NICE=19); the report prints the settings used.
#
#   bench/upload-under-load.sh
#
# Environment:
#   RPS          open-loop rate (default 2000)
#   DURATION     each measured window (default 3s; a 10M-id upload takes ~2 s here)
#   UPLOAD_IDS   ids per upload (default 10000000)
#   ROUNDS       steady/upload window pairs (default 3)
#   UPLOAD_NICE  nice level for personactl (default 0)
#   BENCH_NICE   nice level for personabench (default 0; below 0 needs root)
#   SERVER_GOGC  GOGC for personad (default: unset, Go's 100)
#   SERVER_PROCS GOMAXPROCS for personad (default: unset, the CPU count)
#   SERVER_RESERVE personad's --segments-reserve-users (default: unset, 0)
#   UPLOAD_TO    this (default) or other: "other" sends the uploads to a
#                second personad --demo on this machine (ports BASE_PORT+2
#                and +3) instead of the one under bid load, a control run:
#                the machine is as busy (the upload, personactl, the load
#                generator), but the bids' process does none of the
#                upload's work, so the difference between the two is what
#                the upload costs the bids inside personad
#   RESULTS      directory for the reports (default bench/results/upload-<UTC time>)
#   BIN          directory with personad, personactl, personabench (default: built)
#   BASE_PORT    first of the local ports used, two (four with
#                UPLOAD_TO=other) (default 19190)
#   WIRE         personabench's wire: grpc (default), http (personad's
#                OpenRTB HTTP wire, personabench --wire http) or http+gzip
#                (and --gzip); the uploads go over gRPC whichever it is
#   TRACE        when set, a Go execution trace of personad (started with
#                --pprof) over each upload window, in $RESULTS/trace-N.out:
#                read it with `go tool trace` (or `-d=parsed` for the events);
#                DURATION must then be whole seconds ("3s")
#
# Exit status 3: a window's error rate passed personabench's
# --max-error-rate (1%); every round is still run and printed.
set -euo pipefail

# -h prints the comment above; every setting is an environment variable.
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
[[ $# -eq 0 ]] || { echo "$(basename "$0"): unexpected argument \"$1\": settings are environment variables (see $0 -h)" >&2; exit 2; }

cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"

RPS="${RPS:-2000}"
DURATION="${DURATION:-3s}"
UPLOAD_IDS="${UPLOAD_IDS:-10000000}"
ROUNDS="${ROUNDS:-3}"
UPLOAD_NICE="${UPLOAD_NICE:-0}"
BENCH_NICE="${BENCH_NICE:-0}"
RESULTS="${RESULTS:-bench/results/upload-$(date -u +%Y%m%dT%H%M%SZ)}"
BASE_PORT="${BASE_PORT:-19190}"
case "${WIRE:-grpc}" in grpc | http | http+gzip) ;; *) echo "upload-under-load: WIRE must be grpc, http or http+gzip, not \"$WIRE\"" >&2; exit 2 ;; esac
trap stop_server EXIT # defined by bench/lib.sh
# shellcheck source=bench/lib.sh
. bench/lib.sh

server_env=()
[[ -n "${SERVER_GOGC:-}" ]] && server_env+=("GOGC=$SERVER_GOGC")
[[ -n "${SERVER_PROCS:-}" ]] && server_env+=("GOMAXPROCS=$SERVER_PROCS")
[[ -n "${SERVER_RESERVE:-}" ]] && server_env+=("PERSONAD_SEGMENTS_RESERVE_USERS=$SERVER_RESERVE")
[[ -n "${TRACE:-}" ]] && server_env+=("PERSONAD_PPROF=true")
start_server upload-under-load "${server_env[@]}"

upload_addr="$GRPC"
if [[ "${UPLOAD_TO:-this}" == other ]]; then
	upload_addr="127.0.0.1:$((BASE_PORT + 2))"
	env "${server_env[@]}" "$BIN/personad" --demo --data-dir "$work/other" --grpc-addr "$upload_addr" \
		--http-addr "127.0.0.1:$((BASE_PORT + 3))" --log-level warn >"$RESULTS/personad-other.log" 2>&1 &
	other=$!
	trap 'kill "$other" 2>/dev/null || true; stop_server' EXIT
	for i in $(seq 1 241); do
		curl -fsS "http://127.0.0.1:$((BASE_PORT + 3))/healthz" >/dev/null 2>&1 && break
		kill -0 "$other" 2>/dev/null || { echo "upload-under-load: the other personad exited; see $RESULTS/personad-other.log" >&2; exit 1; }
		[[ $i -lt 241 ]] || { echo "upload-under-load: the other personad not healthy after 120 s; see $RESULTS/personad-other.log" >&2; exit 1; }
		sleep 0.5
	done
elif [[ "${UPLOAD_TO:-this}" != this ]]; then
	echo "upload-under-load: UPLOAD_TO is this or other, not $UPLOAD_TO" >&2
	exit 2
fi

bench() {
	local rc=0
	nice -n "$BENCH_NICE" "$BIN/personabench" run "${target[@]}" --rps "$RPS" --duration "$DURATION" --warmup 1s \
		--progress never --out "$RESULTS/$1.json" >"$RESULTS/$1.txt" || rc=$?
	bench_status "$1" "$rc" # defined by bench/lib.sh
}
p() { grep -o "\"$2\": *[0-9]*" "$1" | head -1 | grep -o '[0-9]*$'; }
errs() { tr -d '\n ' <"$1" | grep -o '"errors":{[^}]*}' | head -1 | sed 's/"errors"://'; }

echo "settings: RPS=$RPS DURATION=$DURATION UPLOAD_IDS=$UPLOAD_IDS UPLOAD_NICE=$UPLOAD_NICE BENCH_NICE=$BENCH_NICE SERVER_GOGC=${SERVER_GOGC:-unset} SERVER_PROCS=${SERVER_PROCS:-unset} SERVER_RESERVE=${SERVER_RESERVE:-unset} UPLOAD_TO=${UPLOAD_TO:-this} TRACE=${TRACE:-unset}"
for r in $(seq 1 "$ROUNDS"); do
	ids="$work/ids-$r"
	seq -f "up${r}x%09.0f" 0 $((UPLOAD_IDS - 1)) >"$ids"
	sync

	bench "steady-$r"

	bench "upload-$r" &
	load=$!
	sleep 1 # personabench's warm-up
	tracing=()
	if [[ -n "${TRACE:-}" ]]; then
		curl -fsS -o "$RESULTS/trace-$r.out" "http://$HTTP/debug/pprof/trace?seconds=${DURATION%s}" &
		tracing=($!)
	fi
	nice -n "$UPLOAD_NICE" "$BIN/personactl" --addr "$upload_addr" segments upload --facet industry --value "upload_$r" "$ids" \
		>"$RESULTS/personactl-$r.txt" 2>&1
	# One wait each: `wait A B` has B's status alone, and a window that
	# failed (bench_status) must end the script.
	wait "$load"
	for pid in "${tracing[@]}"; do wait "$pid"; done
	rm -f "$ids"

	s="$RESULTS/steady-$r.json" u="$RESULTS/upload-$r.json"
	printf 'round %d: steady p50 %s µs p99 %s µs | upload p50 %s µs p99 %s µs | p99 ratio %s | errors %s / %s | upload %s\n' \
		"$r" "$(p "$s" p50)" "$(p "$s" p99)" "$(p "$u" p50)" "$(p "$u" p99)" \
		"$(awk -v a="$(p "$u" p99)" -v b="$(p "$s" p99)" 'BEGIN { printf "%.2f", a / b }')" \
		"$(errs "$s")" "$(errs "$u")" "$(grep -o 'took=[^ ]*\|ids_per_s=[0-9]*' "$RESULTS/personactl-$r.txt" | tr '\n' ' ')"
done
echo "reports: $RESULTS" >&2
bounds_broken
