"""Train the bundled "shapes" text-to-image model and save it as a Stable Diffusion 1.x diffusers folder.

    python -m training.train_shapes --out src/sdart/builtin/shapes --threads 1

Stages (each one deterministic from --seed):
  1. draw the data set (training split only: held-out combinations never appear);
  2. train the AutoencoderKL on the pictures (L1 + MSE + tiny KL);
  3. encode every picture once (posterior mean and std), set the VAE scaling_factor to 1 / std(latents);
  4. train the UNet (+ the CLIP text encoder unless --text-encoder frozen) with the SD recipe:
     epsilon target, DDPM add_noise on the SD noise schedule, min-SNR-5 weights, 10 % empty captions
     (classifier-free guidance), EMA weights;
  5. save the pipeline folder (safetensors), the loss log and the loss plot.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .shapes_data import make_dataset
from .shapes_model import (
    MAX_LENGTH,
    ModelConfig,
    make_text_encoder,
    make_unet,
    make_vae,
    pipeline_scheduler,
    train_scheduler,
    write_tokenizer,
)

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE.parent / "src/sdart/builtin/shapes", help="model folder to write")
    p.add_argument("--log-dir", type=Path, default=HERE / "logs", help="loss log, plot and run summary go here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    p.add_argument("--n-images", type=int, default=40000)
    p.add_argument("--vae-steps", type=int, default=1200)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-mode", choices=("ae", "kl"), default="ae",
                   help="ae: decode the posterior mean, penalise mean² (learns fast; logvar is pinned tiny after "
                        "training so latent_dist.sample() ≈ mean); kl: SD's sampled posterior + KL")
    p.add_argument("--decoder-steps", type=int, default=1500,
                   help="after the UNet: fine-tune the VAE decoder alone (encoder frozen, so the latent space the UNet "
                        "learned stays the same) for sharper edges, as SD's ft-MSE VAE did")
    p.add_argument("--unet-steps", type=int, default=7000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved UNet / text-encoder weights")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--snr-gamma", type=float, default=5.0, help="min-SNR weighting; 0 = plain MSE")
    p.add_argument("--text-encoder", choices=("joint", "frozen"), default="joint")
    defaults = ModelConfig()
    p.add_argument("--unet-channels", default=",".join(map(str, defaults.unet_channels)))
    p.add_argument("--unet-heads", type=int, default=defaults.unet_heads)
    p.add_argument("--vae-channels", default=",".join(map(str, defaults.vae_channels)))
    p.add_argument("--text-hidden", type=int, default=defaults.text_hidden)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=0, help="also save the (EMA) folder every N UNet steps; 0 = at the end")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start the UNet and text encoder from this folder (continue training with a fresh schedule)")
    p.add_argument("--vae-from", type=Path, default=None,
                   help="reuse a trained VAE folder instead of stage 2 (for experiments; the bundled model trains its own)")
    return p.parse_args(argv)


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(","))


def _cosine_lr(step: int, total: int, base: float, warmup: int = 100, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def machine_info() -> dict:
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    info = {"cpu_model": model, "cpu_count": torch.get_num_threads() and __import__("os").cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def train_vae(vae, pixels: torch.Tensor, args, device, gen: torch.Generator, log: list) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    vae.train()
    n = pixels.shape[0]
    for step in range(args.vae_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, args.vae_steps, args.vae_lr)
        idx = torch.randint(0, n, (args.vae_batch,), generator=gen)
        x = pixels[idx].to(device)
        posterior = vae.encode(x).latent_dist
        if args.vae_mode == "ae":
            z = posterior.mean
            kl = 0.5 * z.pow(2).mean()  # the mean² part of the KL: keeps the latent scale bounded
        else:
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
            kl = posterior.kl().mean() / z[0].numel()  # per latent element
        recon = vae.decode(z).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.log_every == 0 or step == args.vae_steps - 1:
            log.append({"stage": "vae", "step": step, "loss": rec.item(), "kl": kl.item()})
            print(f"vae  {step:5d}  rec {rec.item():.4f}  kl {kl.item():.3f}", flush=True)
    vae.eval()
    if args.vae_mode == "ae":
        with torch.no_grad():  # logvar := -20 everywhere (std 4.5e-5): sampling = the mean, as trained
            c = vae.config.latent_channels
            vae.quant_conv.weight[c:] = 0
            vae.quant_conv.bias[c:] = -20.0


def finetune_decoder(vae, latents: torch.Tensor, pixels: torch.Tensor, steps: int, batch: int, lr: float,
                     gen: torch.Generator, device, log: list, log_every: int = 25) -> None:
    """Train only the decoder side (post_quant_conv + decoder) on fixed latents (N, C, h, w) → pixels (N, 3, H, W)."""
    params = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    vae.train()
    n = pixels.shape[0]
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr, warmup=50)
        idx = torch.randint(0, n, (batch,), generator=gen)
        x = pixels[idx].to(device)
        recon = vae.decode(latents[idx].to(device)).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        rec.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            log.append({"stage": "decoder", "step": step, "loss": rec.item()})
            print(f"dec  {step:5d}  rec {rec.item():.4f}", flush=True)
    vae.eval()


@torch.no_grad()
def center_latents(vae, lat_mean: torch.Tensor) -> torch.Tensor:
    """Bake a per-channel shift into the VAE so its latents are zero-mean (SD 1.x pipelines have no shift_factor).

    Encoder: quant_conv's mean outputs get bias -= m. Decoder: post_quant_conv(z + m) = W z + (b + W m).
    """
    m = lat_mean.mean(dim=(0, 2, 3))  # (C,)
    c = m.numel()
    vae.quant_conv.bias[:c] -= m.to(vae.quant_conv.bias.device)
    w = vae.post_quant_conv.weight[:, :, 0, 0]  # (C, C)
    vae.post_quant_conv.bias += w @ m.to(w.device)
    return lat_mean - m[None, :, None, None]


@torch.no_grad()
def encode_all(vae, pixels: torch.Tensor, device, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, pixels.shape[0], batch):
        d = vae.encode(pixels[i:i + batch].to(device)).latent_dist
        means.append(d.mean.cpu())
        stds.append(d.std.cpu())
    return torch.cat(means), torch.cat(stds)


def _swap(models, shadows) -> None:
    """Exchange live and EMA weights in place (call twice to undo)."""
    with torch.no_grad():
        for m, shadow in zip(models, shadows):
            for s, p in zip(shadow, m.parameters()):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)


def train_unet(unet, text_encoder, latents_mean, latents_std, ids, empty_ids, args, device, gen, log: list,
               save=None):
    sched = train_scheduler()
    alphas_cumprod = sched.alphas_cumprod.to(device)
    snr_all = alphas_cumprod / (1 - alphas_cumprod)
    joint = args.text_encoder == "joint"
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if joint else [])
    text_encoder.requires_grad_(joint)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema_models = [unet] + ([text_encoder] if joint else [])
    ema = [[p.detach().clone() for p in m.parameters()] for m in ema_models]
    unet.train()
    text_encoder.train(joint)
    n = latents_mean.shape[0]
    for step in range(args.unet_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, args.unet_steps, args.lr)
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        eps_post = torch.randn(latents_mean[idx].shape, generator=gen)
        x0 = ((latents_mean[idx] + latents_std[idx] * eps_post) * args.scaling_factor).to(device)
        drop = torch.rand(args.batch, generator=gen) < args.caption_dropout
        batch_ids = torch.where(drop[:, None], empty_ids[None, :], ids[idx]).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen).to(device)
        xt = sched.add_noise(x0, noise, t)
        with torch.set_grad_enabled(joint):
            cond = text_encoder(batch_ids)[0]  # (B, 77, hidden): SD 1.x conditions on the last hidden state
        pred = unet(xt, t, cond).sample
        mse = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        if args.snr_gamma > 0:  # Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting"
            snr = snr_all[t]
            mse = mse * torch.clamp(snr, max=args.snr_gamma) / snr
        loss = mse.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for m, shadow in zip(ema_models, ema):
                for s, p in zip(shadow, m.parameters()):
                    s.lerp_(p.detach(), 1 - decay)
        if step % args.log_every == 0 or step == args.unet_steps - 1:
            log.append({"stage": "unet", "step": step, "loss": loss.item()})
            print(f"unet {step:5d}  loss {loss.item():.4f}", flush=True)
        if save is not None and args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.unet_steps:
            _swap(ema_models, ema)
            save(step + 1)
            _swap(ema_models, ema)
    with torch.no_grad():
        for m, shadow in zip(ema_models, ema):
            for s, p in zip(shadow, m.parameters()):
                p.copy_(s)
    unet.eval()
    text_encoder.eval()


def decoder_only(argv: list[str] | None = None) -> None:
    """Stage 5 alone, from the VAE that stage 3 saved in --log-dir/vae: same data, same generator as main()."""
    from diffusers import AutoencoderKL

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    images, _ = make_dataset(args.n_images, seed=args.seed)
    pixels = _to_tensor(images)
    vae = AutoencoderKL.from_pretrained(str(args.log_dir / "vae")).to(device)
    lat_mean, _ = encode_all(vae, pixels, device)
    log: list[dict] = []
    t0 = time.time()
    finetune_decoder(vae, lat_mean, pixels, args.decoder_steps, args.vae_batch, args.vae_lr,
                     torch.Generator().manual_seed(args.seed + 1), device, log, args.log_every)
    vae.save_pretrained(args.log_dir / "vae_decoder_ft")
    (args.log_dir / "decoder_log.json").write_text(json.dumps({"seconds": time.time() - t0, "log": log}))


def plot_losses(log: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    panels = ((axes[0], ("vae", "decoder"), "VAE reconstruction (L1 + MSE)"), (axes[1], ("unet",), "UNet ε-loss (min-SNR-5)"))
    for ax, stages, title in panels:
        offset = 0
        for stage in stages:
            rows = [r for r in log if r["stage"] == stage]
            if rows:
                ax.plot([offset + r["step"] for r in rows], [r["loss"] for r in rows], label=stage)
                offset += rows[-1]["step"] + 1
        if len(stages) > 1:
            ax.legend()
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(args.seed)
    # One CPU generator per stage, so a stage's random draws do not depend on whether an earlier stage ran
    # (--vae-from): VAE = seed, decoder fine-tune = seed + 1, UNet = seed + 2.
    gen = torch.Generator().manual_seed(args.seed)
    t_start, cpu_start = time.time(), time.process_time()
    timings = {}

    # 1. Data
    images, samples = make_dataset(args.n_images, seed=args.seed)
    pixels = _to_tensor(images)
    timings["data_s"] = time.time() - t_start

    cfg = ModelConfig(vae_channels=_ints(args.vae_channels), unet_channels=_ints(args.unet_channels),
                      unet_heads=args.unet_heads, text_hidden=args.text_hidden)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(args.log_dir / "tokenizer")  # save_pretrained copies it into the folder
    vae = make_vae(cfg).to(device)
    text_encoder = make_text_encoder(cfg, tokenizer).to(device)
    unet = make_unet(cfg).to(device)
    if args.init_from is not None:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel.from_pretrained(str(args.init_from / "unet")).to(device)
        text_encoder = CLIPTextModel.from_pretrained(str(args.init_from / "text_encoder")).to(device)
    log: list[dict] = []

    # 2. VAE
    t0 = time.time()
    if args.vae_from is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(str(args.vae_from)).to(device)  # centring and scale are redone below
    else:
        train_vae(vae, pixels, args, device, gen, log)
    timings["vae_s"] = time.time() - t0

    # 3. Latents
    t0 = time.time()
    lat_mean, lat_std = encode_all(vae, pixels, device)
    print("latent channel means before centring", lat_mean.mean(dim=(0, 2, 3)).tolist(), flush=True)
    lat_mean = center_latents(vae, lat_mean)
    args.scaling_factor = float(1.0 / lat_mean.std())
    vae.register_to_config(scaling_factor=args.scaling_factor)
    with torch.no_grad():
        recon = vae.decode(lat_mean[:256].to(device)).sample.cpu()  # checks the baked-in shift too
    vae_rec_mae = float((recon - pixels[:256]).abs().mean() * 127.5)  # in 0..255 units
    timings["encode_s"] = time.time() - t0
    print(f"scaling_factor {args.scaling_factor:.4f}  reconstruction MAE {vae_rec_mae:.2f}/255", flush=True)

    # 4. UNet (+ text encoder)
    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                         return_tensors="pt").input_ids

    ids = tokenize([s.caption for s in samples])
    empty_ids = tokenize([""])[0]  # what the pipeline feeds as the unconditional prompt
    from diffusers import StableDiffusionPipeline

    def save(step: int | None = None) -> None:
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=pipeline_scheduler(),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        folder = args.out if step is None else args.out.parent / f"{args.out.name}-step{step}"
        pipe.save_pretrained(folder, safe_serialization=True)
        # transformers 5 writes only tokenizer.json; keep the source files too so 4.x's slow CLIPTokenizer loads it
        for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copy(args.log_dir / "tokenizer" / name, folder / "tokenizer" / name)

    vae.save_pretrained(args.log_dir / "vae")  # so experiments can reuse it (--vae-from)
    t0 = time.time()
    train_unet(unet, text_encoder, lat_mean, lat_std, ids, empty_ids, args, device,
               torch.Generator().manual_seed(args.seed + 2), log, save=save)
    timings["unet_s"] = time.time() - t0

    # 5. Decoder fine-tune (own generator: the UNet's random stream does not depend on it)
    t0 = time.time()
    if args.decoder_steps:
        lat_mean, _ = encode_all(vae, pixels, device)  # re-encoded by the centred VAE, as decoder_only() does
        finetune_decoder(vae, lat_mean, pixels, args.decoder_steps, args.vae_batch, args.vae_lr,
                         torch.Generator().manual_seed(args.seed + 1), device, log, args.log_every)
        with torch.no_grad():
            recon = vae.decode(lat_mean[:256].to(device)).sample.cpu()
        vae_rec_mae = float((recon - pixels[:256]).abs().mean() * 127.5)
    timings["decoder_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_start
    timings["process_cpu_s"] = time.process_time() - cpu_start  # wall time depends on what else the machine runs

    # 6. Save
    vae.cpu(), text_encoder.cpu(), unet.cpu()
    save()
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in
                (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    summary = {
        "command": "python -m training.train_shapes " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": str(device), "machine": machine_info(), "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "params": n_params, "vae_reconstruction_mae_255": round(vae_rec_mae, 2),
        "final_vae_loss": next((r["loss"] for r in reversed(log) if r["stage"] == "vae"), None),
        "final_unet_loss_mean_last_10_logs": float(np.mean([r["loss"] for r in log if r["stage"] == "unet"][-10:])),
        "weights_bytes": sum(f.stat().st_size for f in args.out.rglob("*.safetensors")),
    }
    (args.log_dir / "loss_log.json").write_text(json.dumps(log))
    (args.log_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    plot_losses(log, args.log_dir / "loss.png")
    print(json.dumps(summary, indent=2), flush=True)
    return summary


if __name__ == "__main__":
    main()
