#!/usr/bin/env bash
# V, V + M and an agent trained in M's dream on CarRacing-v3, on a small CPU budget.
#
#   bash scripts/world_models_carracing.sh [OUT]        (default runs/world_carracing)
#
# Collection on envpool where installed (the env's recommended crop and frame skip 2), a
# 32-d beta-VAE and an MDN-RNN with time budgets, then three PPO agents of the same wall-clock
# budget: on z (V), on [z, h] (V + M) and inside M's dream; each scored by `worldvae evaluate`
# on the same 10 episodes of gymnasium's own CarRacing-v3. Re-running resumes every stage.
set -euo pipefail
OUT=${1:-runs/world_carracing}
AGENT_SECONDS=${AGENT_SECONDS:-420}
W="${PYTHON:-python} -m worldvae"
$W collect --env CarRacing-v3 --frames 20000 --workers 2 --policy brownian --seed 0 --out "$OUT/data"
$W train-vae --data "$OUT/data" --out "$OUT/vae" --latent-dim 32 --epochs 5 --batch-size 128 \
    --max-seconds 420 --resume
$W encode-data --data "$OUT/data" --model "$OUT/vae" --out "$OUT/latents"
$W train-rnn --data "$OUT/latents" --out "$OUT/rnn" --epochs 10 --seq-len 32 --batch-size 32 \
    --resume
cat > "$OUT/budget.yaml" <<YAML
ppo:
  n_envs: 4
YAML
for arm in V VM dream; do
  case $arm in
    V) extra=(--obs latent) ;;
    VM) extra=(--obs latent+h --memory "$OUT/rnn") ;;
    dream) extra=(--obs latent+h --memory "$OUT/rnn" --dream) ;;
  esac
  if [ ! -f "$OUT/agents/$arm/agent.zip" ]; then
    $W train-agent --env CarRacing-v3 --model "$OUT/vae" "${extra[@]}" --steps 2000000 \
        --max-train-seconds "$AGENT_SECONDS" --eval-freq 20000 --eval-episodes 2 \
        --hyperparams "$OUT/budget.yaml" --seed 0 --out "$OUT/agents/$arm"
  fi
  $W evaluate "$OUT/agents/$arm" --episodes 10 --backend gymnasium > "$OUT/agents/$arm.eval.txt"
done
tail -n 2 "$OUT"/agents/*.eval.txt
