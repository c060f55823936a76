#!/usr/bin/env bash
# Standard personabench scenarios against a running personad server.
#
#   bench/scenarios.sh [ADDR]            # default 127.0.0.1:9090
#
# Environment:
#   RESULTS      directory for the JSON reports (default bench/results/<UTC time>)
#   PERSONABENCH personabench binary (default: built from ./cmd/personabench)
#   DURATION     measured window of each run (default 30s)
#   CONCURRENCY  closed-loop workers for the ceiling (default 32)
#   EXTRA        extra flags for every run (for example "--conns 4 --seed 7")
#   START_SERVER auto (default): when nothing listens on ADDR, build and start
#                personad --demo on a temporary data dir there for the run;
#                0: never (fail instead)
#
# Each scenario writes RESULTS/<name>.json and RESULTS/<name>.txt (the human
# report, also printed);
# the progress lines go to stderr. The server's CPU per request is read from
# /proc when it is a local process. Exit status 3: every scenario ran, but
# one broke a bound (run, baseline: an error rate above personabench's
# --max-error-rate, 1%; sweep: errors past its bound at its first rate).
set -euo pipefail

# -h prints the comment above; the one argument is the server's host:port.
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
if [[ $# -gt 1 || "${1:-}" == -* ]]; then
	echo "$(basename "$0"): unexpected argument \"${@: -1}\": want at most ADDR (host:port); settings are environment variables (see $0 -h)" >&2
	exit 2
fi

cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"

ADDR="${1:-${PERSONABENCH_ADDR:-127.0.0.1:9090}}"
RESULTS="${RESULTS:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
DURATION="${DURATION:-30s}"
CONCURRENCY="${CONCURRENCY:-32}"
read -r -a EXTRA <<<"${EXTRA:-}"

# One temporary directory for what the script builds and a server it
# starts, removed on exit. The trap runs under errexit: each command in it
# must not fail (kill of a server that has already exited does).
work="$(mktemp -d)"
server=
cleanup() {
	if [[ -n "$server" ]]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

if [[ -z "${PERSONABENCH:-}" ]]; then
	PERSONABENCH="$work/personabench"
	go build -o "$PERSONABENCH" ./cmd/personabench
fi
mkdir -p "$RESULTS"

listening() { (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; }

if ! listening; then
	if [[ "${START_SERVER:-auto}" == 0 ]]; then
		echo "scenarios: nothing listens on $ADDR (START_SERVER=0)" >&2
		exit 1
	fi
	go build -o "$work/personad" ./cmd/personad
	echo "scenarios: starting personad --demo on $ADDR (data dir $work/data)" >&2
	"$work/personad" --demo --data-dir "$work/data" --grpc-addr "$ADDR" --http-addr 127.0.0.1:0 \
		--log-level warn >"$RESULTS/personad.log" 2>&1 &
	server=$!
	for _ in $(seq 1 240); do
		listening && break
		kill -0 "$server" 2>/dev/null || { echo "scenarios: personad exited; see $RESULTS/personad.log" >&2; exit 1; }
		sleep 0.5
	done
	listening || { echo "scenarios: personad did not listen on $ADDR within 120s" >&2; exit 1; }
fi
echo "personabench scenarios against $ADDR → $RESULTS" >&2

# A scenario that exits 3 wrote its report but broke a bound (run and
# baseline: --max-error-rate; sweep: errors at its first rate): noted, and
# the others run.
broken=()
scenario() {
	local name="$1" rc=0
	shift
	echo "== $name: personabench $*" >&2
	"$PERSONABENCH" "$@" "${EXTRA[@]}" --out "$RESULTS/$name.json" | tee "$RESULTS/$name.txt" || rc=$?
	case "$rc" in
	0) ;;
	3) broken+=("$name") ;;
	*) exit "$rc" ;;
	esac
}

# 1. The transport floor: the same harness against an empty-handler server.
scenario baseline-5k baseline --rps 5000 --duration "$DURATION"
scenario baseline-ceiling baseline --concurrency "$CONCURRENCY" --duration "$DURATION"
# 2. Open loop at the exchange rates of the performance goals, each with the
#    baseline measured right after it for the ratio.
scenario open-5k run --addr "$ADDR" --rps 5000 --duration "$DURATION" --baseline
scenario open-10k run --addr "$ADDR" --rps 10000 --duration "$DURATION" --baseline
# 3. The throughput ceiling, closed loop.
scenario closed-ceiling run --addr "$ADDR" --concurrency "$CONCURRENCY" --duration "$DURATION" --baseline
# 4. The knee: rising open-loop rates until p99 > 5 ms or errors > 0.1 %.
scenario sweep sweep --addr "$ADDR" --start 2500 --step 2500 --max 40000 --p99-bound 5ms --duration 10s

echo "done: $RESULTS" >&2
if ((${#broken[@]})); then
	echo "bounds broken (personabench exit 3; see its message above each): ${broken[*]}" >&2
	exit 3
fi
