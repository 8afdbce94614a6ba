#!/usr/bin/env bash
# Both sides of the step benchmark in one call, so every ratio comes from one machine and one session:
# bench/step.py (jaxlens, and naive JAX if asked) then bench/torch_step.py (reference, Liger), then the table.
#
#   bench/run_step_bench.sh OUT_DIR [common args: --device --pair --batch --seq-len --scale --find-max ...]
#
# Environment:
#   JAX_VARIANTS    variants of bench/step.py (default "jaxlens naive")
#   TORCH_VARIANTS  variants of bench/torch_step.py (default "reference liger")
#   JAX_EXTRA       extra arguments of bench/step.py only (e.g. "--block 1024 --remat none --attention auto")
#   TORCH_EXTRA     extra arguments of bench/torch_step.py only
#   JAX_TIMEOUT, TORCH_TIMEOUT  seconds each side may run (default 3600); a side stopped by its timeout keeps the
#                   records it wrote, and the table is still made
# Writes OUT_DIR/steps.jsonl (raw records, appended) and OUT_DIR/steps.md (bench/step_report.py).
set -uo pipefail
out=${1:?usage: bench/run_step_bench.sh OUT_DIR [args]}
shift
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# shellcheck disable=SC2086
timeout "${JAX_TIMEOUT:-3600}" python3 "$here/step.py" --variant ${JAX_VARIANTS:-jaxlens naive} "$@" ${JAX_EXTRA:-} \
  --out "$out/steps.jsonl" || echo "bench/step.py exited with $?" >&2
# shellcheck disable=SC2086
timeout "${TORCH_TIMEOUT:-3600}" python3 "$here/torch_step.py" --variant ${TORCH_VARIANTS:-reference liger} "$@" \
  ${TORCH_EXTRA:-} --out "$out/steps.jsonl" || echo "bench/torch_step.py exited with $?" >&2
python3 "$here/step_report.py" "$out/steps.jsonl" | tee "$out/steps.md"
