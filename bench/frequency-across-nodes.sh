#!/usr/bin/env bash
# A frequency cap across nodes, end to end: NODES personad servers share a
# Redis ledger (database REDIS_DB, which must be empty: the script refuses
# one that is not, and empties it when done), with a capped campaign (max
# 2 an hour) and an uncapped fallback bidding less. One user none of them
# has seen is sent round-robin to them over OpenRTB JSON, SPACING apart;
# the script prints the campaign each answer bid on, and how many bids
# the capped campaign got.
#
# What to see: the first request bids on the capped campaign (the node
# reads the user's count from Redis before deciding, not capping a user it
# does not know), and the capped campaign gets 2 bids in all. A build
# before that read (BIN=dir of its personad) answers the fallback on each
# node's first visit, then passes the cap on every node.
#
#   bench/frequency-across-nodes.sh
#
# Environment:
#   NODES      servers (default 3)
#   REQUESTS   requests (default 9)
#   SPACING    seconds between requests (default 0.2)
#   REDIS_URL  Redis server (default redis://127.0.0.1:6379)
#   REDIS_DB   Redis database for the ledger, empty (default 15)
#   BIN        directory with personad (default: built)
#   BASE_PORT  first of 2×NODES local ports (default 19700)
set -euo pipefail

# -h prints the comment above; every setting is an environment variable.
case "${1:-}" in -h | --help) sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit 0 ;; esac
[[ $# -eq 0 ]] || { echo "$(basename "$0"): unexpected argument \"$1\": settings are environment variables (see $0 -h)" >&2; exit 2; }

cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--mod=mod}"

NODES="${NODES:-3}"
REQUESTS="${REQUESTS:-9}"
SPACING="${SPACING:-0.2}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
REDIS_DB="${REDIS_DB:-15}"
BASE_PORT="${BASE_PORT:-19700}"

rcli() { redis-cli -u "$REDIS_URL/$REDIS_DB" "$@"; }
size="$(rcli dbsize 2>&1)" || true
if [[ ! "$size" =~ ^[0-9]+$ ]]; then
	echo "frequency-across-nodes: Redis at ${REDIS_URL##*@} (REDIS_URL, without any password), database $REDIS_DB, does not answer DBSIZE (set REDIS_URL): ${size:-no reply}" >&2
	exit 1
fi
if [[ "$size" != 0 ]]; then
	echo "frequency-across-nodes: Redis database $REDIS_DB is not empty; set REDIS_DB to an empty one" >&2
	exit 1
fi

work="$(mktemp -d)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rcli flushdb >/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

if [[ -z "${BIN:-}" ]]; then
	BIN="$work/bin"
	go build -o "$BIN/" ./cmd/personad
fi

cat >"$work/rules.yaml" <<'EOF'
campaigns:
  - id: capped
    adomain: [capped.example]
    bid_cpm: 4
    frequency_cap: {max: 2, window: 1h}
    creatives: [{id: cr-capped, w: 300, h: 250, adm: "<b>capped</b>"}]
  - id: fallback
    adomain: [fallback.example]
    bid_cpm: 1
    creatives: [{id: cr-fallback, w: 300, h: 250, adm: "<b>fallback</b>"}]
EOF

http=()
for n in $(seq 1 "$NODES"); do
	g="127.0.0.1:$((BASE_PORT + 2 * n - 2))" h="127.0.0.1:$((BASE_PORT + 2 * n - 1))"
	"$BIN/personad" --data-dir "$work/d$n" --rules "$work/rules.yaml" --ledger "$REDIS_URL/$REDIS_DB" \
		--grpc-addr "$g" --http-addr "$h" --log-level warn >"$work/log$n" 2>&1 &
	pids+=($!)
	http+=("$h")
done
for n in $(seq 1 "$NODES"); do
	for i in $(seq 1 121); do
		curl -fsS "http://${http[$((n - 1))]}/healthz" >/dev/null 2>&1 && break
		[[ $i -lt 121 ]] || { echo "frequency-across-nodes: node $n not healthy after 60 s:" >&2; cat "$work/log$n" >&2; exit 1; }
		sleep 0.5
	done
done

user="fresh-$(date +%s%N)"
capped=0
for i in $(seq 0 $((REQUESTS - 1))); do
	n=$((i % NODES))
	body='{"id":"f-'$i'","tmax":200,"imp":[{"id":"1","banner":{"w":300,"h":250}}],"site":{"domain":"example.com"},"user":{"id":"'$user'"}}'
	cid=$(curl -s -X POST -H 'Content-Type: application/json' --data-binary "$body" "http://${http[$n]}/openrtb2/bid" |
		grep -o '"cid":"[^"]*"' | cut -d'"' -f4 || true)
	echo "request $i, node $((n + 1)): ${cid:-no bid}"
	[[ "$cid" == capped ]] && capped=$((capped + 1))
	sleep "$SPACING"
done
echo "the capped campaign (max 2) bid $capped times across $NODES nodes"
