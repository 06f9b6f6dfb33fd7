#!/usr/bin/env bash
# A tuned PPO against the RL zoo's recipe on CarRacing-v3's [z, h], after a `worldmodels`
# preset run and a `worldvae tune --obs latent+h` study on its V and M: the same arm, seeds and
# wall-clock budget, once with the zoo's hyperparameters (agents/hyperparams/CarRacing-v3.yaml)
# and once with the study's best.yaml, the two trained side by side (one core each), each
# one's best policy (chosen on envpool tracks from 20000) scored on gymnasium's own tracks,
# with its mode action and with sampled actions (evaluate --stochastic).
#
#   bash scripts/carracing_tuned.sh [RUN] [STUDY] [OUT]
#     RUN    a finished `worldvae pipeline --preset worldmodels` directory
#            (default runs/pipeline/worldmodels__CarRacing-v3)
#     STUDY  the tune study (default runs/tune/carracing-latent-h)
#     OUT    default runs/carracing-tuned
#
# Every stage resumes when re-run. SEEDS (default 1), AGENT_SECONDS (default 1200) and
# TRACKS (default 100, gymnasium's CarRacing-v3 from seed 10000) override.
set -euo pipefail
RUN=${1:-runs/pipeline/worldmodels__CarRacing-v3}
STUDY=${2:-runs/tune/carracing-latent-h}
OUT=${3:-runs/carracing-tuned}
SEEDS=${SEEDS:-1}
AGENT_SECONDS=${AGENT_SECONDS:-1200}
TRACKS=${TRACKS:-100}
PY=${PYTHON:-python}
W="$PY -m worldvae"

train() {  # train ARM_NAME [--hyperparams FILE]: one comparison of the latent+h arm
  local name=$1
  shift
  # one torch thread each, as `compare --workers 2` gives its side-by-side runs
  OMP_NUM_THREADS=1 $W compare --env CarRacing-v3 --obs latent+h --model "$RUN/vae" --memory "$RUN/rnn" \
    --seeds "$SEEDS" --steps 10000000 --max-train-seconds "$AGENT_SECONDS" \
    --eval-freq 20000 --eval-episodes 4 --eval-seed 20000 --final-episodes 4 --no-probe \
    --workers 1 --out "$OUT/$name" "$@"
}

train zoo &
ZOO=$!
train tuned --hyperparams "$STUDY/best.yaml" &
TUNED=$!
wait $ZOO
wait $TUNED

for name in zoo tuned; do
  BEST=$($PY "$(dirname "$0")/best_policy.py" "$OUT/$name/runs" --obs latent+h)
  WHICH=final
  [[ $BEST == best-agent:* ]] && WHICH=best
  for mode in deterministic stochastic; do  # the policy's mode, and its sampled actions
    SCORE="$OUT/$name/canonical-$mode.txt"
    if [ ! -s "$SCORE" ]; then
      $W evaluate "${BEST#*:}" --which "$WHICH" --episodes "$TRACKS" --seed 10000 \
        --backend gymnasium --workers 2 "--$mode" > "$SCORE.tmp"
      mv "$SCORE.tmp" "$SCORE"
    fi
    cat "$SCORE"
  done
done
