#!/usr/bin/env bash
# World Models' iterative training on CarRacing-v3, after a `carracing` preset run: a second
# round of frames collected by the first round's best latent driver, a V trained on both
# rounds, and latent PPO agents on it with the preset's budget, scored like the preset's.
#
#   bash scripts/carracing_second_round.sh [RUN] [OUT]
#     RUN  a finished `worldvae pipeline --preset carracing` directory
#          (default runs/pipeline/carracing__CarRacing-v3)
#     OUT  default runs/carracing-round2
#
# Every stage resumes when re-run. SEEDS (default 3), AGENT_SECONDS (default 300) and
# TRACKS (default 100, gymnasium's CarRacing-v3 from seed 10000, as the preset) override.
set -euo pipefail
RUN=${1:-runs/pipeline/carracing__CarRacing-v3}
OUT=${2:-runs/carracing-round2}
SEEDS=${SEEDS:-3}
AGENT_SECONDS=${AGENT_SECONDS:-300}
TRACKS=${TRACKS:-100}
PY=${PYTHON:-python}
W="$PY -m worldvae"

best_run() {  # the policy of the highest periodic evaluation among a comparison's latent runs
  $PY "$(dirname "$0")/best_policy.py" "$1" --obs latent
}

DRIVER=$(best_run "$RUN/compare/runs")
echo "round 2 driver: $DRIVER"
$W collect --env CarRacing-v3 --policy "$DRIVER" --frames 20000 --workers 2 --seed 1 \
    --out "$OUT/data2"  # seed 1: other tracks than round 1's (seed 0)
[ -d "$OUT/data12" ] || $W data merge "$RUN/data" "$OUT/data2" --out "$OUT/data12"
if [ ! -d "$OUT/vae2" ]; then
  $W train-vae --data "$OUT/data12" --out "$OUT/vae2" --latent-dim 32 --epochs 5 --batch-size 128
else
  $W train-vae --data "$OUT/data12" --out "$OUT/vae2" --latent-dim 32 --epochs 5 --batch-size 128 --resume
fi
$W compare --env CarRacing-v3 --obs latent --model "$OUT/vae2" --seeds "$SEEDS" --steps 2000000 \
    --max-train-seconds "$AGENT_SECONDS" --eval-freq 10000 --eval-episodes 2 --final-episodes 5 \
    --workers 2 --out "$OUT/compare"
BEST=$(best_run "$OUT/compare/runs")
WHICH=final; [[ $BEST == best-agent:* ]] && WHICH=best
$W evaluate "${BEST#*:}" --which "$WHICH" --episodes "$TRACKS" --seed 10000 --backend gymnasium \
    --workers 2 | tee "$OUT/canonical.txt"
