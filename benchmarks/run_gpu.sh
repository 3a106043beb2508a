#!/usr/bin/env bash
# Issue 7's GPU benchmarks in one go: 7B prefill, 1.6B training step, the whole 67B on one GPU.
#
#   bash benchmarks/run_gpu.sh benchmarks/results            # one H200: about 5-6 minutes, at most 7
#   PEAK_FLOPS=measure bash benchmarks/run_gpu.sh OUT ...     # MFU against the peak measured on this card
#   bash benchmarks/run_gpu.sh /tmp/check --small --device cpu --compile-backend aot_eager   # CPU check
#
# Each script runs in its own process (the 67B needs a clean card) under a hard timeout; each writes its
# records after every measurement, so a timeout or a crash keeps what was measured. Extra flags go to all
# three scripts. Logs: OUT/<script>.log. Then the table is rebuilt from OUT (benchmarks/RESULTS.md when OUT is
# benchmarks/results, else OUT/RESULTS.md).
set -uo pipefail
out=${1:-benchmarks/results}
shift || true
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
peak=()
[ "${PEAK_FLOPS:-790e12}" != measure ] && peak=(--peak-flops "${PEAK_FLOPS:-790e12}")
mkdir -p "$out"
start=$SECONDS
status=0
#        script hard-timeout(s): 410 s at most in all; each script stops starting measurements after 90-110 s
for job in "bench_prefill 130" "bench_train 160" "bench_67b 120"; do
  set -- $job "$@"
  script=$1 limit=$2
  shift 2
  extra=()
  [ "$script" = bench_67b ] && extra=(--warmup 1 --repeats 3)
  echo "=== $script (timeout ${limit}s, $((SECONDS - start))s so far) ===" | tee "$out/$script.log"
  timeout "$limit" "$py" "benchmarks/$script.py" --out "$out" "${peak[@]}" "${extra[@]}" "$@" 2>&1 | tee -a "$out/$script.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -ne 0 ] && { echo "!!! $script exited with $rc (records so far are kept)"; status=1; }
done
md="$out/RESULTS.md"
[ "$(realpath "$out")" = "$(realpath benchmarks/results)" ] && md=benchmarks/RESULTS.md  # the committed table
"$py" benchmarks/make_results_md.py --results "$out" --output "$md" || status=1
echo "=== all done in $((SECONDS - start))s; results in $out (status $status) ==="
exit $status
