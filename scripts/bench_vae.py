"""VAE training throughput: this trainer's step against a plain reference, plus encode latency.

Both arms train the same World Models "V" architecture on the same uint8 frames in memory, with
the same loss (summed MSE + KL), batch size and AdamW optimiser:

* reference: the straightforward recipe: frames converted to float32 on the host, NCHW
  contiguous, model in the default memory format, fp32;
* worldvae: ``Autoencoder.training_loss``: uint8 moved to the device and converted there,
  channels_last, bf16 autocast on CUDA (fp32 on CPU), optional ``torch.compile``.

Blocks of ``--steps`` steps alternate (reference, worldvae, reference, ...) for ``--rounds``
rounds in one process; medians are printed. Encode latency compares ``Autoencoder.encode``
(inference_mode, channels_last) with a plain ``no_grad`` NCHW float forward.

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
from worldvae.models import Autoencoder, AutoencoderConfig, losses


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
    torch.manual_seed(0)
    b = args.batch_size
    frames = make_frames(4 * b, args.frame_size)
    cfg = AutoencoderConfig(kind="vae", frame_shape=(args.frame_size, args.frame_size, 3))

    ref = Autoencoder(cfg).to(device)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-4)
    ours = Autoencoder(cfg).to(device).to(memory_format=torch.channels_last)
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    step_fn = torch.compile(ours.training_loss) if args.compile else ours.training_loss
    if device.type == "cuda":
        frames_dev = torch.from_numpy(frames).to(device)  # uint8 stays on the device

        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        frames_dev = torch.from_numpy(frames)

        def autocast():
            return torch.autocast("cpu", enabled=False)

    def batch_index(i: int) -> slice:
        return slice((i % 4) * b, (i % 4 + 1) * b)

    counter = {"ref": 0, "ours": 0}

    def ref_fn() -> None:
        counter["ref"] += 1
        reference_step(ref, ref_opt, frames[batch_index(counter["ref"])], device)

    def ours_fn() -> None:
        counter["ours"] += 1
        worldvae_step(step_fn, ours_opt, frames_dev[batch_index(counter["ours"])], autocast)

    for fn in (ref_fn, ours_fn):  # warm-up (and compilation)
        time_block(fn, 2, b, device)
    rates: dict[str, list[float]] = {"reference": [], "worldvae": []}
    for r in range(args.rounds):
        rates["reference"].append(time_block(ref_fn, args.steps, b, device))
        rates["worldvae"].append(time_block(ours_fn, args.steps, b, device))
        print(
            f"round {r + 1}: reference {rates['reference'][-1]:.0f} img/s, worldvae {rates['worldvae'][-1]:.0f} img/s",
            flush=True,
        )
    ref_med, ours_med = statistics.median(rates["reference"]), statistics.median(rates["worldvae"])
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"\ntraining, {name}, batch {b}, {args.frame_size}x{args.frame_size}, medians of {args.rounds}"
    )
    print(f"  reference {ref_med:10.0f} img/s")
    print(f"  worldvae  {ours_med:10.0f} img/s   ratio {ours_med / ref_med:.2f}x")

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

        times: dict[str, list[float]] = {"plain": [], "worldvae": []}
        for _ in range(3):
            plain(), fast()
        for _ in range(20):
            for key, fn in (("plain", plain), ("worldvae", fast)):
                sync(device)
                t = time.perf_counter()
                fn()
                sync(device)
                times[key].append(time.perf_counter() - t)
        pm, fm = statistics.median(times["plain"]), statistics.median(times["worldvae"])
        print(
            f"  batch {n:3d}: plain {pm * 1e3:7.2f} ms ({n / pm:8.0f} img/s)   worldvae {fm * 1e3:7.2f} ms ({n / fm:8.0f} img/s)"
        )


if __name__ == "__main__":
    main()
