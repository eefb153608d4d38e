#!/usr/bin/env bash
# scaling.sh: kurier bench against one kurierd on badger, one on
# PostgreSQL and two on one PostgreSQL database, in turns, on one machine.
# See docs/SCALING.md ("Measured: whole nodes").
#
#   bench/scaling.sh ROUNDS DEV DSN OUT [MESSAGES]
#
# DEV is a development setup (kurierd -dev -data DEV) whose kurierd.yaml
# has the sender limits raised (bench/README.md); it is never changed.
# DSN names a PostgreSQL database whose role may create databases
# (postgres://user@127.0.0.1:5432/postgres); each PostgreSQL run gets a
# new database beside it, dropped afterwards. KURIERD, KURIER and PSQL
# name the binaries (default: on PATH). Each round runs --mode submit,
# MESSAGES messages (default 1500) of 1024 bytes from 16 senders: on
# badger, on PostgreSQL with one process, and with two processes (the
# second on the next port) that the senders use in turn (--node A,B).
# One JSON file per run goes to OUT.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,17p "$0"; exit 2; }
rounds=$1 dev=$2 dsn=$3 out=$4 messages=${5:-1500}
kurierd=${KURIERD:-kurierd} kurier=${KURIER:-kurier} psql=${PSQL:-psql}
addr=$(sed -n 's/^listen: *//p' "$dev/kurierd.yaml")
addr2=${addr%:*}:$((${addr##*:} + 1))
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# start CONFIG: runs kurierd from CONFIG until it listens; its pid is
# appended to pids.
start() {
  "$kurierd" -config "$1" > "$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q "node listening" "$1.log" && return; sleep 0.1; done
  echo "kurierd -config $1 did not start:" >&2; cat "$1.log" >&2; exit 1
}
stop() { for p in "${pids[@]}"; do kill "$p"; wait "$p" || true; done; pids=(); }

# config NAME DB: a fresh copy of DEV in work/NAME, on a new badger store
# or, with DB, on the new PostgreSQL database DB.
config() {
  rm -rf "$work/$1" && cp -r "$dev" "$work/$1" && rm -rf "$work/$1/store"
  sed -i "s#$dev#$work/$1#g" "$work/$1/kurierd.yaml"
  if [ -n "${2:-}" ]; then
    "$psql" -q "$dsn" -c "CREATE DATABASE $2"
    sed -i -e 's#^data: .*#data: ""#' -e "s#^\(    postgres:\).*#\1 \"${dsn%/*}/$2\"#" "$work/$1/kurierd.yaml"
  fi
}

bench() { # NAME ROUND NODES
  "$kurier" bench --id "$work/$1/identities/agency" --to eingang@amtsgericht.example \
    --node "$3" --crl "$work/$1/ca/crl.pem" --mode submit --messages "$messages" \
    --size 1024 --concurrency 16 --node-pid "${pids[0]}" --json > "$out/$1-$2.json" || true
}

for r in $(seq 1 "$rounds"); do
  config badger && start "$work/badger/kurierd.yaml" && bench badger "$r" "$addr"; stop
  db=kurier_scaling_$$_$r
  config pg1 "${db}_1" && start "$work/pg1/kurierd.yaml" && bench pg1 "$r" "$addr"; stop
  "$psql" -q "$dsn" -c "DROP DATABASE ${db}_1"
  config pg2 "${db}_2"
  sed "s#^listen: .*#listen: $addr2#" "$work/pg2/kurierd.yaml" > "$work/pg2/second.yaml"
  start "$work/pg2/kurierd.yaml" && start "$work/pg2/second.yaml" && bench pg2 "$r" "$addr,$addr2"; stop
  "$psql" -q "$dsn" -c "DROP DATABASE ${db}_2"
done
