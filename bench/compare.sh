#!/usr/bin/env bash
# compare.sh: the JetStream baseline and kurier bench, in turns, on one
# machine. See README.md ("Beside kurier bench") for the setup.
#
#   bench/compare.sh ROUNDS DEV OUT KURIERD...
#
# DEV is a development setup (kurierd -dev -data DEV) whose kurierd.yaml
# has the sender limits raised; it is never changed: each Kurier run
# starts the given kurierd on a fresh copy of it (a new, empty store).
# KURIER and JETSTREAM name the binaries (default: on PATH). Each round
# runs JetStream plain and with mutual TLS, then for every KURIERD the
# modes submit (2000 messages), lifecycle (1000) and lifecycle --open
# (300), 1024 bytes, 16 senders. One JSON file per run goes to OUT.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,14p "$0"; exit 2; }
rounds=$1 dev=$2 out=$3; shift 3
kurier=${KURIER:-kurier} jetstream=${JETSTREAM:-jetstream}
addr=$(sed -n 's/^listen: *//p' "$dev/kurierd.yaml")
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for r in $(seq 1 "$rounds"); do
  "$jetstream" -messages 2000 -size 1024 -concurrency 16 -store "$work" -json > "$out/jetstream-$r.json"
  "$jetstream" -messages 2000 -size 1024 -concurrency 16 -store "$work" -tls -json > "$out/jetstream-tls-$r.json"
  for bin in "$@"; do
    name=$(basename "$bin")
    for mode in submit lifecycle open; do
      rm -rf "$work/dev" && cp -r "$dev" "$work/dev" && rm -rf "$work/dev/store"
      sed -i "s#$dev#$work/dev#g" "$work/dev/kurierd.yaml"
      "$bin" -config "$work/dev/kurierd.yaml" > "$work/node.log" 2>&1 &
      pid=$!
      for _ in $(seq 1 200); do grep -q "node listening" "$work/node.log" && break; sleep 0.1; done
      case $mode in
        submit) args=(--mode submit --messages 2000) ;;
        lifecycle) args=(--mode lifecycle --messages 1000) ;;
        open) args=(--mode lifecycle --open --messages 300) ;;
      esac
      "$kurier" bench --id "$work/dev/identities/agency" --recipient-id "$work/dev/identities/court" \
        --to eingang@amtsgericht.example --node "$addr" --crl "$work/dev/ca/crl.pem" \
        --size 1024 --concurrency 16 --node-pid "$pid" "${args[@]}" --json > "$out/$name-$mode-$r.json" || true
      kill "$pid"; wait "$pid" || true
    done
  done
done
