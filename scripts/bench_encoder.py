"""Latency of the V's encoder on the CPU: PyTorch eager against the inference runtimes.

The World Models V (64x64x3 frames, latent 32, convs 32-64-128-256): uint8 frames in, the
posterior mean ``(N, 32)`` out, at batch 8 (a VecEnv step of 8 envs) and batch 1 (one env).
The frames are real CarRacing-v3 frames (random actions, cropped and resized as in
``bench_latent.py``). Without ``--model`` the V is trained for ``--train-steps`` steps on
those frames first, so that its weights are not those of the initialisation.

Arms, timed in alternating blocks of about ``--block-seconds`` within this process (the first
arm rotating from round to round), for each thread count in ``--threads``:

* ``torch fp32``: ``model.encode`` (what the latent wrappers call), the baseline;
* ``torch bf16``: the same under bf16 autocast (what ``--precision auto`` runs on AMX CPUs);
* ``torch channels_last``: a copy of the model with channels_last weights;
* ``torch jit.freeze``: traced, frozen and ``optimize_for_inference``;
* ``torch.compile``: with ``--compile`` (its compilation takes about a minute);
* ``openvino fp32`` / ``openvino bf16``: :func:`worldvae.vae.inference.encoder_runtime`;
* ``onnxruntime fp32``: the encoder exported by ``torch.onnx.export``;
* ``onnxruntime built``: :func:`worldvae.vae.inference.encoder_runtime` with
  ``runtime="onnxruntime"`` (the graph built from the weights, what ``"auto"`` runs on the CPU);
* ``onnxruntime int8`` / ``openvino int8``: that export quantized by onnxruntime's
  ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, calibrated on the
  frames), run by each runtime.

Printed: the CPU, each arm's agreement with ``torch fp32`` on all frames (max abs and max abs
over the largest latent), then the median milliseconds per call and the median of the
per-round ratios to ``torch fp32`` at the same thread count. The onnxruntime arms and
OpenVINO need ``pip install onnxruntime onnx openvino``; missing ones are skipped.

    python scripts/bench_encoder.py                  # 1-1.5 min on two loaded cores
    python scripts/bench_encoder.py --threads 1 --compile
    python scripts/bench_encoder.py --model runs/vae/carracing
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from envs import make_env
from worldvae.precision import machine_summary
from worldvae.vae import Autoencoder, AutoencoderConfig, load_model
from worldvae.vae.inference import compare_with_torch, encoder_runtime, runtime_available

ENV_ID = "CarRacing-v3"
OPTIONS: dict[str, Any] = {"frame_size": 64, "crop": (0, 12, 0, 0), "frame_skip": 2}
BASELINE = "torch fp32"
Arm = Callable[[np.ndarray], np.ndarray]


class MeanEncoder(nn.Module):
    """uint8 frames ``(N, H, W, C)`` -> posterior mean ``(N, D)``, as one traceable module."""

    def __init__(self, model: Autoencoder):
        super().__init__()
        self.encoder, self.head, self.latent_dim = model.encoder, model.head, model.latent_dim

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        return self.head(self.encoder(x))[:, : self.latent_dim]


def real_frames(n: int, seed: int = 0) -> np.ndarray:
    """``n`` CarRacing-v3 frames ``(n, 64, 64, 3)`` under random actions."""
    env = make_env(ENV_ID, **OPTIONS)
    env.action_space.seed(seed)
    frame, _ = env.reset(seed=seed)
    frames = [frame]
    while len(frames) < n:
        frame, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(frame)
        if terminated or truncated:
            frame, _ = env.reset()
            frames.append(frame)
    env.close()
    return np.stack(frames[:n])


def trained_v(frames: np.ndarray, steps: int) -> Autoencoder:
    """The World Models V trained ``steps`` Adam steps on ``frames`` (batches of 32), on one
    thread (two OpenMP threads on a loaded two-core machine run several times slower)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Autoencoder(AutoencoderConfig(kind="vae", frame_shape=(64, 64, 3), latent_dim=32))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for step in range(steps):
        batch = torch.from_numpy(frames[rng.integers(0, len(frames), 32)])
        loss, _ = model.training_loss(batch, step)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def torch_arms(model: Autoencoder, example: np.ndarray, compile_too: bool) -> dict[str, Arm]:
    """The PyTorch arms: eager fp32 and bf16, channels_last, jit.freeze, torch.compile."""
    fp32 = encoder_runtime(model, "torch", precision="fp32")
    bf16 = encoder_runtime(model, "torch", precision="bf16")
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(MeanEncoder(model).eval(), torch.from_numpy(example))
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def module_arm(module: Callable[[Tensor], Tensor]) -> Arm:
        def run(frames: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(frames)).numpy()

        return run

    arms: dict[str, Arm] = {
        BASELINE: fp32,
        "torch bf16": bf16,
        "torch channels_last": lambda f: channels_last.encode(f),
        "torch jit.freeze": module_arm(frozen),
    }
    if compile_too:
        t = time.perf_counter()
        arms["torch.compile"] = module_arm(torch.compile(MeanEncoder(model).eval()))
        for n in (8, 1):
            arms["torch.compile"](example[:n])
        print(f"torch.compile: compiled batch 8 and 1 in {time.perf_counter() - t:.0f} s")
    return arms


def export_onnx(model: Autoencoder, example: np.ndarray, path: Path) -> Path:
    """The mean encoder as ONNX at ``path`` (uint8 NHWC frames in, dynamic batch)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanEncoder(model).eval(),
            (torch.from_numpy(example),),
            path,
            dynamo=False,
            input_names=["frames"],
            output_names=["mu"],
            dynamic_axes={"frames": {0: "batch"}, "mu": {0: "batch"}},
        )
    return path


def quantized_onnx(fp32_onnx: Path, frames: np.ndarray, path: Path) -> Path:
    """``fp32_onnx`` quantized to int8 (QDQ, per-channel) on ``frames``, written to ``path``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"frames": frames[i : i + 8]} for i in range(0, len(frames), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the graph
    quantize_static(
        fp32_onnx,
        path,
        Frames(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return path


def onnxruntime_arm(path: Path, n_threads: int) -> Arm:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = n_threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda frames: session.run(None, {"frames": frames})[0]


def openvino_onnx_arm(path: Path, n_threads: int) -> Arm:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": n_threads, "PERFORMANCE_HINT": "LATENCY"}
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda frames: np.array(request.infer({0: frames})[0], copy=True)


def runtime_arms(
    model: Autoencoder, frames: np.ndarray, n_threads: int, folder: Path
) -> dict[str, Arm]:
    """The OpenVINO (fp32, bf16) and, where installed, the onnxruntime and int8 arms."""
    arms: dict[str, Arm] = {}
    if runtime_available("openvino"):
        for precision in ("fp32", "bf16"):
            arms[f"openvino {precision}"] = encoder_runtime(
                model, "openvino", precision=precision, n_threads=n_threads
            )
    if not (runtime_available("onnxruntime") and runtime_available("onnx")):
        print("onnxruntime or onnx is not installed: its arms are skipped")
        return arms
    fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
    if not int8.exists():  # once: the same files serve every thread count
        quantized_onnx(export_onnx(model, frames[:8], fp32), frames, int8)
    arms["onnxruntime fp32"] = onnxruntime_arm(fp32, n_threads)
    arms["onnxruntime built"] = encoder_runtime(model, "onnxruntime", n_threads=n_threads)
    arms["onnxruntime int8"] = onnxruntime_arm(int8, n_threads)
    if runtime_available("openvino"):
        arms["openvino int8"] = openvino_onnx_arm(int8, n_threads)
    return arms


def agreement(arms: dict[str, Arm], model: Autoencoder, frames: np.ndarray) -> None:
    """Print each arm's distance to PyTorch's fp32 latents on all ``frames``."""
    reference = model.encode(frames)
    scale = float(np.abs(reference).max())
    print(f"agreement with {BASELINE} on {len(frames)} frames (largest |latent| {scale:.3f})")
    for name, arm in arms.items():
        z = np.concatenate([arm(frames[i : i + 8]) for i in range(0, len(frames), 8)])
        max_abs = float(np.abs(z - reference).max())
        print(f"  {name:22s} max abs {max_abs:.2e}   relative {max_abs / scale:.2e}")


def time_block(arm: Arm, frames: np.ndarray, seconds: float) -> float:
    """Seconds per call over calls repeated for about ``seconds`` (3 calls at least)."""
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        arm(frames)
        n += 1
    return (time.perf_counter() - start) / n


def alternate(
    arms: dict[str, Arm], frames: np.ndarray, rounds: int, seconds: float
) -> dict[str, list[float]]:
    """Seconds per call of each arm per round, arms in turn, the first one rotating."""
    names = list(arms)
    for name in names:  # warm-up: first-call allocations and kernel choices
        time_block(arms[name], frames, seconds / 5)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(time_block(arms[name], frames, seconds))
    return times


def report(times: dict[str, list[float]], batch: int, n_threads: int) -> None:
    base = times[BASELINE]
    print(f"batch {batch}, {n_threads} thread(s): ms per call (median), ratio to {BASELINE}")
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        print(f"  {name:22s} {statistics.median(ts) * 1e3:8.3f} ms   {ratio:5.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="a trained V's model directory")
    p.add_argument("--train-steps", type=int, default=30, help="without --model: steps on frames")
    p.add_argument("--frames", type=int, default=256, help="real frames: training, checks")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, nargs="+", default=[8, 1])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--block-seconds", type=float, default=0.1)
    p.add_argument("--compile", action="store_true", help="add torch.compile (slow to compile)")
    args = p.parse_args()
    print(machine_summary())
    frames = real_frames(args.frames)
    if args.model is not None:
        model = load_model(args.model, device="cpu")
    else:
        t = time.perf_counter()
        model = trained_v(frames, args.train_steps)
        print(
            f"V trained {args.train_steps} steps on {len(frames)} {ENV_ID} frames "
            f"in {time.perf_counter() - t:.0f} s"
        )
    with tempfile.TemporaryDirectory() as tmp:
        for n_threads in args.threads:
            torch.set_num_threads(n_threads)
            arms = torch_arms(model, frames[:8], args.compile)
            arms |= runtime_arms(model, frames, n_threads, Path(tmp))
            if n_threads == args.threads[0]:
                agreement(arms, model, frames)
                fe = encoder_runtime(model)
                check = compare_with_torch(fe, model, frames)
                print(f"encoder_runtime(model) here: {fe.name} {fe.precision}, {check}")
            for batch in args.batches:
                report(
                    alternate(arms, frames[:batch], args.rounds, args.block_seconds),
                    batch,
                    n_threads,
                )


if __name__ == "__main__":
    main()
