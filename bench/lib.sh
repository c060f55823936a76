# Shared by the bench/*-under-load.sh scripts (sourced, not run): a fresh
# `personad --demo` on local ports, with the binaries built when BIN is
# not given.
#
# Before sourcing: RESULTS (the reports' directory), BASE_PORT, and,
# when the script runs personabench, WIRE (grpc, the default, http or
# http+gzip; the script refuses another before sourcing). After:
# GRPC, HTTP, work (a temporary directory, removed on exit), BIN, target
# (personabench's flags to bid at the server over WIRE). A script's own
# EXIT trap calls stop_server.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	echo "bench/lib.sh is sourced by the bench/*.sh scripts, not run: run one of them (each takes -h)" >&2
	exit 2
fi

# stop_server stops the server, if started, and removes $work.
stop_server() {
	kill "${server:-}" 2>/dev/null || true
	wait 2>/dev/null
	[[ -n "${work:-}" ]] && rm -rf "$work"
}

GRPC="127.0.0.1:$BASE_PORT"
HTTP="127.0.0.1:$((BASE_PORT + 1))"
# target bids at the server over WIRE: its gRPC port, or personabench's
# --wire http (and --gzip) at its OpenRTB HTTP port.
case "${WIRE:-grpc}" in
http) target=(--wire http --addr "$HTTP") ;;
http+gzip) target=(--wire http --gzip --addr "$HTTP") ;;
*) target=(--addr "$GRPC") ;;
esac
work="$(mktemp -d)"
if [[ -z "${BIN:-}" ]]; then
	BIN="$work/bin"
	go build -o "$BIN/" ./cmd/personad ./cmd/personactl ./cmd/personabench
fi
mkdir -p "$RESULTS"

# start_server NAME [ENV=VALUE ...]: starts personad --demo with data in
# $work/data, its log in $RESULTS/personad.log, and waits until it is
# healthy; sets server to its pid. NAME prefixes the error messages.
start_server() {
	local name="$1"
	shift
	env "$@" "$BIN/personad" --demo --data-dir "$work/data" --grpc-addr "$GRPC" --http-addr "$HTTP" \
		--log-level warn >"$RESULTS/personad.log" 2>&1 &
	server=$!
	for _ in $(seq 1 240); do
		curl -fsS "http://$HTTP/healthz" >/dev/null 2>&1 && return 0
		kill -0 "$server" 2>/dev/null || { echo "$name: personad exited; see $RESULTS/personad.log" >&2; exit 1; }
		sleep 0.5
	done
	echo "$name: personad not healthy after 120 s; see $RESULTS/personad.log" >&2
	exit 1
}

# bench_status NAME STATUS: a personabench run's exit status. 3 (its
# report is written, but more of its requests failed or were dropped than
# --max-error-rate allows) is noted and the script goes on, so that its
# windows are still compared; bounds_broken, at the end, then exits 3
# naming them. Any other failure ends the script (from a background
# window: its wait fails).
bench_status() {
	case "$2" in
	0) ;;
	3) echo "$1" >>"$work/bounds-broken" ;;
	*) exit "$2" ;;
	esac
}

# bounds_broken exits 3 when a window noted by bench_status broke its bound.
bounds_broken() {
	[[ -s "$work/bounds-broken" ]] || return 0
	echo "error rate above personabench's --max-error-rate in: $(paste -sd ' ' "$work/bounds-broken") (reports in $RESULTS)" >&2
	exit 3
}
