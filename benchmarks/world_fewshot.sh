#!/usr/bin/env bash
# The offline world's few-shot table (docs/world.md): zero-shot CLIP, the linear probe, CoOp and MetaPrompt with
# their world presets, 1 2 4 8 16 shots, seeds 1 2 3, on the demo-sized world; two workers share each sweep.
#   bash benchmarks/world_fewshot.sh [WORK_DIR]      (about 10 minutes on 2 CPU cores)
set -euo pipefail
work=${1:-/tmp/metaprompt-world-fewshot}
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
metaprompt world render --out "$work/data/world" --train-per-class 16 --test-per-class 25 --val-per-class 4 \
    --processes 2 > /dev/null 2>&1
for preset in world_zeroshot_b2n world_linear_probe world_coop_b2n world_metaprompt_b2n; do
    for worker in 1 2; do
        OMP_NUM_THREADS=1 metaprompt run fewshot --preset "$preset" --root "$work/data" --datasets world \
            --shots 1 2 4 8 16 --seeds 1 2 3 --out "$work/results" --no-progress > "$work/$preset-$worker.log" 2>&1 &
    done
    wait
done
metaprompt report "$work/results" --figure "$work/fewshot.png" 2>/dev/null
echo "took $(( $(date +%s) - start )) s"
