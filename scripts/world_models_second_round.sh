#!/usr/bin/env bash
# World Models' second round of data on CarRacing-v3, after a `worldmodels` preset run: frames
# driven by the run's best [z, h] driver, merged with the first (brownian) round, encoded by
# the same V, an M trained on both rounds with the preset's settings, and a C trained by
# CMA-ES only inside that M's dream, then scored on gymnasium's own tracks and in its dream.
# V stays the first round's, so the first round's drivers and V's numbers still hold.
#
#   bash scripts/world_models_second_round.sh [RUN] [OUT]
#     RUN  a finished `worldvae pipeline --preset worldmodels` directory
#          (default runs/pipeline/worldmodels__CarRacing-v3)
#     OUT  default runs/worldmodels-round2
#
# Every stage resumes when re-run. FRAMES (default 30000), M_SECONDS (default 600),
# C_SECONDS (default 900), TEMPERATURE (default: M's, 1.0), TRACKS (default 100,
# gymnasium's CarRacing-v3 from seed 10000), ENSEMBLE (default 0: more Ms, trained on the same
# latents with seeds 1..ENSEMBLE, that dream beside M: --dream-memory) and C_NAME (default
# dream-cmaes, the C's folder in OUT) override. C is scored by the policy of its best
# evaluation on the tracks from 20000 (--which best).
set -euo pipefail
RUN=${1:-runs/pipeline/worldmodels__CarRacing-v3}
OUT=${2:-runs/worldmodels-round2}
FRAMES=${FRAMES:-30000}
M_SECONDS=${M_SECONDS:-600}
C_SECONDS=${C_SECONDS:-900}
TRACKS=${TRACKS:-100}
ENSEMBLE=${ENSEMBLE:-0}
C=$OUT/${C_NAME:-dream-cmaes}
PY=${PYTHON:-python}
W="$PY -m worldvae"
FRAME_OPTIONS=(--crop 0,12,0,0 --frame-skip 2 --frame-size 64)

DRIVER=$($PY "$(dirname "$0")/best_policy.py" "$RUN/compare/runs" --obs latent+h)
echo "round 2 driver: $DRIVER"
# seed 1: other tracks than round 1's (seed 0); a re-run adds to what is there
$W collect --env CarRacing-v3 --policy "$DRIVER" --frames "$FRAMES" --workers 2 --seed 1 \
    "${FRAME_OPTIONS[@]}" --out "$OUT/data2"
[ -d "$OUT/data12" ] || $W data merge "$RUN/data" "$OUT/data2" --out "$OUT/data12"
[ -d "$OUT/latents12" ] || $W encode-data --data "$OUT/data12" --model "$RUN/vae" \
    --out "$OUT/latents12"
RESUME=()
[ -d "$OUT/rnn2" ] && RESUME=(--resume)
$W train-rnn --data "$OUT/latents12" --out "$OUT/rnn2" --epochs 200 --patience 10 \
    --max-seconds "$M_SECONDS" "${RESUME[@]}"
MEMBERS=()
for k in $(seq 1 "$ENSEMBLE"); do
  RESUME=()
  [ -d "$OUT/rnn2-seed$k" ] && RESUME=(--resume)
  $W train-rnn --data "$OUT/latents12" --out "$OUT/rnn2-seed$k" --epochs 200 --patience 10 \
      --max-seconds "$M_SECONDS" --seed "$k" "${RESUME[@]}"
  MEMBERS+=("$OUT/rnn2-seed$k")
done
ENSEMBLE_OPTION=()
[ "$ENSEMBLE" -gt 0 ] && ENSEMBLE_OPTION=(--dream-memory "$(IFS=,; echo "${MEMBERS[*]}")")
TEMP=()
[ -n "${TEMPERATURE:-}" ] && TEMP=(--temperature "$TEMPERATURE")
mkdir -p "$OUT"
# the preset's controller settings (agents/presets.py, ControllerStage)
printf 'cmaes:\n  popsize: 16\n  rollouts: 2\n  sigma0: 0.1\n  workers: 2\n' > "$OUT/cmaes.yaml"
if ! grep -q '"status": "complete"' "$C/config.json" 2>/dev/null; then
  # an interrupted C starts again (--overwrite removes only an agent run's own files)
  $W train-agent --env CarRacing-v3 --obs latent+h --algo cmaes --dream "${TEMP[@]}" \
      "${ENSEMBLE_OPTION[@]}" --hyperparams "$OUT/cmaes.yaml" --overwrite --model "$RUN/vae" \
      --memory "$OUT/rnn2" --steps 1000000000 \
      --max-train-seconds "$C_SECONDS" --eval-freq 100000 --eval-episodes 4 \
      --eval-seed 20000 --out "$C"
fi
[ -s "$C/canonical.txt" ] || {
  $W evaluate "$C" --which best --episodes "$TRACKS" --seed 10000 --backend gymnasium \
      --workers 2 > "$C/canonical.tmp"
  mv "$C/canonical.tmp" "$C/canonical.txt"
}
cat "$C/canonical.txt"
$PY - "$C" <<'EOF'
import sys
from pathlib import Path

from agents.canonical import Chosen
from agents.world_models import dream_returns

returns = dream_returns(Chosen(Path(sys.argv[1]), "best", 0), 20, 20000)
print(f"in its dream: {returns.mean():.1f} +- {returns.std():.1f} over 20 episodes")
EOF
