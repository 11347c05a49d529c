#!/usr/bin/env bash
# Every GPU check in one run, for a session that is lent a GPU machine (about 10 minutes on an H100).
# Prints one table at the end; full logs go to $OUT (or /tmp/gpu_checks). Run from the repository root:
#
#   bash bench/gpu_checks.sh
#
# The device tool's machine has torch, transformers, peft and accelerate but not diffusers: carry its wheel
# (see the device tool's README: download diffusers + huggingface_hub wheels into .whl/, pip install them there).
# For the real-data run, copy the Figshare JPEG copy into a git-ignored folder (.device/figshare) and carry it.
set -u
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
declare -a rows

check() {  # check NAME SECONDS COMMAND...: run with a time limit, keep its last line for the table
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local code=$?
  rows+=("$(printf '%-22s exit %-3s %4ss  %s' "$name" "$code" "$((SECONDS - start))" "$(tail -n 1 "$out/$name.log" | cut -c1-90)")")
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
check pytest-gpu 240 python -m pytest -m gpu -q -p no:cacheprovider
check classifier-bench 240 python bench/classifier_throughput.py
check generator-bench 300 python bench/generator_throughput.py --json "$out/generator.json"
# Issue 14 on real SD-Turbo weights (a local copy: ~5 GB, too large to carry; put it in .device/sd-turbo where the
# machine has one): 1-step vs multi-step sharpness after a LoRA fine-tune, fp16 NaN-free sampling, LoRA alpha reload.
if [ -d .device/sd-turbo ]; then
  check sd-real-weights 480 python bench/sd_real_weights.py --model .device/sd-turbo --out "$out/sdreal"
fi
if [ -d .device/figshare ]; then
  check prepare-ref 120 python -m mrisynth -q data prepare .device/figshare --split file:seed_split.csv --out "$out/ref"
  check seed-recipe-ref 600 python -m mrisynth -q classifier train --data "$out/ref" --preset seed --out "$out/clf-ref"
fi

echo "GPU: $(cat "$out/gpu.txt")"
printf '%s\n' "${rows[@]}"
