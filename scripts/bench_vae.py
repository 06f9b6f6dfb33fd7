"""VAE training throughput: this trainer's step against a plain reference, plus encode latency.

Both arms train the same World Models "V" architecture on the same uint8 frames in memory, with
the same loss (summed MSE + KL), batch size and AdamW optimiser:

* reference: the straightforward recipe: frames converted to float32 on the host, NCHW
  contiguous, model in the default memory format, fp32;
* worldvae fp32 and worldvae bf16: ``Autoencoder.training_loss``: uint8 moved to the device
  and converted there, channels_last, in fp32 and under bf16 autocast (what
  ``--precision auto`` picks on CUDA and on CPUs with AMX), optional
  ``torch.compile``.

Blocks of ``--steps`` steps alternate (reference, fp32, bf16, reference, ...) for
``--rounds`` rounds in one process; medians are printed, with the CPU and what torch reports.
Encode latency compares ``Autoencoder.encode`` (inference_mode, channels_last) in fp32 and
bf16 with a plain ``no_grad`` NCHW float forward.

    python scripts/bench_vae.py                       # CPU
    python scripts/bench_vae.py --device cuda --batch-size 1024 --compile
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from worldvae.devices import resolve_device
from worldvae.precision import autocast as precision_autocast
from worldvae.precision import machine_summary, resolve_precision
from worldvae.vae import Autoencoder, AutoencoderConfig, losses


def make_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Game-like frames: a textured background and moving blobs, uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, size, size, 3), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        base = rng.integers(60, 140, 3)
        img = np.broadcast_to(base, (size, size, 3)).copy()
        for _ in range(3):
            cy, cx = rng.integers(0, size, 2).tolist()
            r = int(rng.integers(4, size // 4))
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        frames[i] = img
    return frames


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_step(
    model: Autoencoder, opt: torch.optim.Optimizer, frames_u8: np.ndarray, device: torch.device
) -> None:
    x = torch.from_numpy(frames_u8).float().div(255.0).permute(0, 3, 1, 2).contiguous().to(device)
    h = model.head(model.encoder(x))
    mu, logvar = h.chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    recon = losses.reconstruction_loss(model.decode_logits(z), x, "mse").mean()
    loss = recon + losses.gaussian_kl(mu, logvar).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def worldvae_step(step_fn, opt: torch.optim.Optimizer, frames_u8: torch.Tensor, autocast) -> None:
    with autocast():
        loss, _ = step_fn(frames_u8)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_block(fn, n_steps: int, batch: int, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(n_steps):
        fn()
    sync(device)
    return n_steps * batch / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--frame-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="training steps per block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    device = resolve_device(args.device)
    print(machine_summary())
    print(f"--precision auto picks {resolve_precision('auto', device)} on {device}", flush=True)
    torch.manual_seed(0)
    b = args.batch_size
    frames = make_frames(4 * b, args.frame_size)
    cfg = AutoencoderConfig(kind="vae", frame_shape=(args.frame_size, args.frame_size, 3))

    ref = Autoencoder(cfg).to(device)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-4)
    frames_dev = torch.from_numpy(frames).to(device)  # uint8 stays on the device
    arms = {}
    for precision in ("fp32", "bf16"):
        model = Autoencoder(cfg).to(device).to(memory_format=torch.channels_last)
        model.load_state_dict(ref.state_dict())
        step_fn = torch.compile(model.training_loss) if args.compile else model.training_loss
        arms[precision] = (model, step_fn, torch.optim.AdamW(model.parameters(), lr=1e-4))
    ours = arms["fp32"][0]

    def batch_index(i: int) -> slice:
        return slice((i % 4) * b, (i % 4 + 1) * b)

    counter = {"reference": 0, "fp32": 0, "bf16": 0}

    def ref_fn() -> None:
        counter["reference"] += 1
        reference_step(ref, ref_opt, frames[batch_index(counter["reference"])], device)

    def arm_fn(precision: str):
        _, step_fn, opt = arms[precision]

        def run() -> None:
            counter[precision] += 1
            worldvae_step(
                step_fn,
                opt,
                frames_dev[batch_index(counter[precision])],
                lambda: precision_autocast(device, precision),
            )

        return run

    fns = {"reference": ref_fn, "fp32": arm_fn("fp32"), "bf16": arm_fn("bf16")}
    for fn in fns.values():  # warm-up (and compilation)
        time_block(fn, 2, b, device)
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.rounds):
        for key, fn in fns.items():
            rates[key].append(time_block(fn, args.steps, b, device))
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in rates.items()),
            flush=True,
        )
    ref_med = statistics.median(rates["reference"])
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"\ntraining, {name}, batch {b}, {args.frame_size}x{args.frame_size}, medians of {args.rounds}"
    )
    print(f"  reference      {ref_med:10.0f} img/s")
    for key in ("fp32", "bf16"):
        med = statistics.median(rates[key])
        print(f"  worldvae {key} {med:10.0f} img/s   ratio to reference {med / ref_med:.2f}x")

    print("\nencode latency (median of 20 calls after warm-up)")
    ours.eval()
    ref.eval()
    for n in (1, 8, 64):
        x_np = frames[:n]

        def plain(x_np: np.ndarray = x_np) -> None:
            with torch.no_grad():
                x = (
                    torch.from_numpy(x_np)
                    .float()
                    .div(255.0)
                    .permute(0, 3, 1, 2)
                    .contiguous()
                    .to(device)
                )
                ref.head(ref.encoder(x)).chunk(2, dim=1)[0].cpu()

        def fast(x_np: np.ndarray = x_np) -> None:
            ours.encode(x_np)

        def fast_bf16(x_np: np.ndarray = x_np) -> None:
            with precision_autocast(device, "bf16"):
                ours.encode(x_np)

        calls = {"plain": plain, "fp32": fast, "bf16": fast_bf16}
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(3):
            for fn in calls.values():
                fn()
        for _ in range(20):
            for key, fn in calls.items():
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                times[key].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"  batch {n:3d}: "
            + "   ".join(f"{k} {m * 1e3:7.2f} ms ({n / m:7.0f} img/s)" for k, m in med.items())
        )


if __name__ == "__main__":
    main()
