#!/usr/bin/env bash
# The long run of the differential test (tests/differential.rs): generated requests and
# responses read by Portcullis's HTTP/1.1 codec and by hyper, for a time budget, from a
# seed taken from the clock. The seed is printed first; a failure is printed with its
# seed, its input number and its bytes, and replays alone with
#   DIFFERENTIAL_SEED=S DIFFERENTIAL_FIRST=N DIFFERENTIAL_INPUTS=1 \
#     cargo test --test differential long_run -- --ignored --nocapture
#
# Usage: benches/fuzz.sh [--minutes N] [--seed S] [--inputs N] [--first N] [--release]
#
#   --minutes N   stop after N minutes (default 10)
#   --seed S      the seed (default: nanoseconds since the epoch)
#   --inputs N    stop after N inputs, if sooner (default 2,000,000)
#   --first N     the first input's number (default 0)
#   --release     build the test in release mode: several times the inputs per minute,
#                 for machines with cores to spare (a release build of the crate takes
#                 long on 2 cores)
#
# Exits non-zero when an input was read differently; the summary (counts per class,
# with the shortest input of each) goes to stderr either way.
set -euo pipefail

cd "$(dirname "$0")/.."

minutes=10
seed=""
inputs=2000000
first=0
profile=()

while [ "$#" -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --inputs) inputs="$2"; shift 2 ;;
        --first) first="$2"; shift 2 ;;
        --release) profile=(--release); shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fuzz.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

for value in "$minutes" "$inputs" "$first"; do
    case "$value" in
        ''|*[!0-9]*) echo "fuzz.sh: not a whole number: $value" >&2; exit 2 ;;
    esac
done
if [ -z "$seed" ]; then
    seed="$(date +%s%N)"
fi

echo "fuzz.sh: seed $seed, $minutes minute(s), at most $inputs inputs from #$first" >&2
echo "fuzz.sh: replay with --seed $seed (or DIFFERENTIAL_SEED=$seed)" >&2

DIFFERENTIAL_SEED="$seed" \
DIFFERENTIAL_MINUTES="$minutes" \
DIFFERENTIAL_INPUTS="$inputs" \
DIFFERENTIAL_FIRST="$first" \
    cargo test ${profile[@]+"${profile[@]}"} --test differential long_run -- --ignored --nocapture
