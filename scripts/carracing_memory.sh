#!/usr/bin/env bash
# World Models' V + M on CarRacing-v3, after a `carracing` preset run: M (the MDN-RNN) trained
# on the run's frames encoded by its V, then latent PPO agents on [z, h] with the preset's
# budget and evaluation, and their best policy scored on gymnasium's own CarRacing-v3.
#
#   bash scripts/carracing_memory.sh [RUN] [OUT]
#     RUN  a finished `worldvae pipeline --preset carracing` directory
#          (default runs/pipeline/carracing__CarRacing-v3)
#     OUT  default runs/carracing-memory
#
# DATA and VAE (default RUN/data and RUN/vae) pick other frames and another V, e.g. a second
# round's. Every stage resumes when re-run. SEEDS (default 3), AGENT_SECONDS (default 300),
# RNN_EPOCHS (default 100, stopped early when validation stops improving) and TRACKS
# (default 100) override.
set -euo pipefail
RUN=${1:-runs/pipeline/carracing__CarRacing-v3}
OUT=${2:-runs/carracing-memory}
DATA=${DATA:-$RUN/data}
VAE=${VAE:-$RUN/vae}
SEEDS=${SEEDS:-3}
AGENT_SECONDS=${AGENT_SECONDS:-300}
RNN_EPOCHS=${RNN_EPOCHS:-100}
TRACKS=${TRACKS:-100}
PY=${PYTHON:-python}
W="$PY -m worldvae"

[ -d "$OUT/latents" ] || $W encode-data --data "$DATA" --model "$VAE" --out "$OUT/latents"
$W train-rnn --data "$OUT/latents" --out "$OUT/rnn" --epochs "$RNN_EPOCHS" --patience 10 --resume
$W compare --env CarRacing-v3 --obs latent+h --model "$VAE" --memory "$OUT/rnn" --seeds "$SEEDS" \
    --steps 2000000 --max-train-seconds "$AGENT_SECONDS" --eval-freq 10000 --eval-episodes 2 \
    --final-episodes 5 --workers 2 --out "$OUT/compare"
BEST=$($PY "$(dirname "$0")/best_policy.py" "$OUT/compare/runs" --obs latent+h)
WHICH=final; [[ $BEST == best-agent:* ]] && WHICH=best
$W evaluate "${BEST#*:}" --which "$WHICH" --episodes "$TRACKS" --seed 10000 --backend gymnasium \
    --workers 2 | tee "$OUT/canonical.txt"
