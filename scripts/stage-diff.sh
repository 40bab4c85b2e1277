#!/usr/bin/env bash
# stage-diff.sh: changed lines per file between consecutive stages (or the
# two named), Go sources and go.mod only, with each stage's module path
# made the same so imports do not count as changes.
#
#   scripts/stage-diff.sh                  02 -> 03 and 03 -> 04
#   scripts/stage-diff.sh 02-single-node 03-member-nodes
set -euo pipefail
cd "$(dirname "$0")/.."

pairs=("$@")
if [ ${#pairs[@]} -eq 0 ]; then
  pairs=(02-single-node 03-member-nodes 03-member-nodes 04-cometbft-consensus)
fi
if [ $(( ${#pairs[@]} % 2 )) -ne 0 ]; then
  echo "usage: $0 [from-stage to-stage]..." >&2
  exit 2
fi

# normalized copies a stage's Go sources and go.mod into $2, its module
# path replaced by STAGE.
normalized() {
  local stage=$1 out=$2
  (cd "$stage" && find . \( -name '*.go' -o -name go.mod \) -print) | while read -r f; do
    mkdir -p "$out/$(dirname "$f")"
    sed "s#github.com/geth-consensus/tutorial/$stage#STAGE#g" "$stage/$f" > "$out/$f"
  done
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((i = 0; i < ${#pairs[@]}; i += 2)); do
  from=${pairs[i]} to=${pairs[i+1]}
  rm -rf "$tmp/a" "$tmp/b"
  normalized "$from" "$tmp/a"
  normalized "$to" "$tmp/b"
  echo "=== $from -> $to (+added -removed lines, Go sources and go.mod)"
  (cd "$tmp" && diff -ruN a b || true) | awk '
    /^diff / { file = $NF; sub(/^b\//, "", file) }
    /^\+\+\+ / || /^--- / { next }
    /^\+/ { add[file]++; total_add++ }
    /^-/ { del[file]++; total_del++ }
    END {
      for (f in add) seen[f] = 1
      for (f in del) seen[f] = 1
      for (f in seen) printf "%6d %6d  %s\n", add[f], del[f], f | "sort -k3"
      close("sort -k3")
      printf "%6d %6d  total\n", total_add, total_del
    }'
done
