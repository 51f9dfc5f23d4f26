"""Part A loop benchmark (run by hand; prints a table; not a test).

    python benchmarks/bench_partA_loop.py                 # CPU: tiny and small random IF-shaped UNets
    python benchmarks/bench_partA_loop.py --threads 1     # steadier numbers on a shared CPU
    python benchmarks/bench_partA_loop.py --mini          # + the trained mini model, 5 images per sample
    python benchmarks/bench_partA_loop.py --full-size     # + IF-I-XL-sized UNet, fp16, CUDA only

What it measures, per denoising step (best of ``--repeats`` interleaved runs after a warm-up):

* diffnb's CFG loop (``iterative_denoise_cfg``) vs diffusers' ``IFPipeline`` on the same UNet,
  same embeddings, same strided timesteps.  Target: diffnb no slower (ratio <= ~1).
* diffnb's anagram loop (``make_flip_illusion``: 2 views x cond/uncond, one batch of 4) per step,
  against the pipeline's CFG step (it does twice the UNet work, so ~2x is expected), and against the
  same anagram estimator run as four separate UNet passes.
* batched cond/uncond (one UNet call on 2N) vs two separate passes (two calls on N), through the
  same loop.  Target: >= 1.5x on CPU.
* the same rows with a stub UNet (eps = 0, no network): the loop's own cost per step, which is what
  diffnb and the pipeline can differ in; it is steady even on a busy CPU.

``--full-size`` builds a randomly initialised UNet shaped like IF-I-XL (4 levels of 704 x (1, 2, 3, 4)
channels, 3 res blocks, attention at 32/16/8, pooled T5 text: 4.30B weights, as IF-I-XL's 4.3B; the
exact published config is not available offline) in fp16 on CUDA, and times a 33-step CFG sample and
its peak memory for diffnb vs IFPipeline.  Weights are random: it measures speed and memory only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import timed  # noqa: E402

from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel  # noqa: E402
from diffusers.configuration_utils import ConfigMixin, register_to_config  # noqa: E402
from diffusers.models.modeling_utils import ModelMixin  # noqa: E402
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput  # noqa: E402

from diffnb.a.denoise import (cfg_combine, denoise_loop, iterative_denoise_cfg, pure_noise, run_unet,  # noqa: E402
                         strided_timesteps)
from diffnb.a.views import FlipView, IdentityView, anagram_estimator, make_flip_illusion  # noqa: E402
from diffnb.a.models import IF_SCHEDULER_CONFIG, tiny_unet_config  # noqa: E402


class StubUNet(ModelMixin, ConfigMixin):
    """A UNet stand-in that does (almost) no work: eps = 0, variance = 0. Timing the loop with it
    measures what the loop itself costs per step (scheduler maths, noise draws, batching)."""

    @register_to_config
    def __init__(self, in_channels: int = 3, out_channels: int = 6, sample_size: int = 32, encoder_hid_dim: int = 4096):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True, **kwargs):
        out = torch.cat([sample * self.scale, torch.zeros_like(sample)], dim=1)   # (B, 2C, H, W)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def small_config() -> dict:
    """A somewhat larger random IF-shaped UNet (3 levels, 64 x 64, pooled text) for CPU timing."""
    return tiny_unet_config(pooled_text=True, sample_size=64, layers_per_block=2, block_out_channels=(64, 128, 192),
                            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D",
                                              "SimpleCrossAttnDownBlock2D"),
                            up_block_types=("SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                                            "ResnetUpsampleBlock2D"),
                            cross_attention_dim=256, attention_head_dim=32)


def xl_config() -> dict:
    base = 704
    return tiny_unet_config(pooled_text=True, sample_size=64, layers_per_block=3,
                            block_out_channels=tuple(base * m for m in (1, 2, 3, 4)),
                            down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
                            up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
                            cross_attention_dim=4 * base, attention_head_dim=64)


def build(config: dict | None, device: torch.device, dtype: torch.dtype) -> IFPipeline:
    """An IFPipeline (no T5) around a random UNet built from ``config``, or the stub UNet if None."""
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**config) if config is not None else StubUNet()
    if dtype != torch.float32:
        unet = unet.to(dtype)
    unet.eval()
    pipe = IFPipeline(tokenizer=None, text_encoder=None, unet=unet, scheduler=DDPMScheduler(**IF_SCHEDULER_CONFIG),
                      safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def two_pass_estimator(stage1, cond, uncond, scale):
    """CFG with the unconditional and conditional passes as two UNet calls (what batching avoids)."""
    def estimate(x, t):
        [(eps_u, _)] = run_unet(stage1, [x], [uncond], t)
        [(eps_c, var_c)] = run_unet(stage1, [x], [cond], t)
        return cfg_combine(eps_u, eps_c, scale), var_c
    return estimate


def unbatched_anagram_estimator(stage1, views, conds, uncond, scale):
    """The anagram estimate with one UNet call per (view, prompt) pass: 4 calls per step."""
    def estimate(x, t):
        eps_k, var_k = [], []
        for v, c in zip(views, conds):
            xv = v.view(x)
            [(eps_u, _)] = run_unet(stage1, [xv], [uncond], t)
            [(eps_c, var_c)] = run_unet(stage1, [xv], [c], t)
            eps_k.append(v.inverse_view(cfg_combine(eps_u, eps_c, scale)))
            var_k.append(v.inverse_view_variance(var_c))
        return torch.stack(eps_k).mean(0), torch.stack(var_k).mean(0)
    return estimate


def bench_cpu_model(name: str, config: dict | None, stride: int, repeats: int, n: int, pipe=None,
                    length: int = 77) -> list[tuple[str, float, str]]:
    device, dtype = torch.device("cpu"), torch.float32
    pipe = pipe if pipe is not None else build(config, device, dtype)
    d = pipe.unet.config.encoder_hid_dim
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(1, length, d, generator=g), torch.randn(1, length, d, generator=g)
    ts = strided_timesteps(pipe, 990, stride)
    steps = len(ts) - 1
    x0 = pure_noise(pipe, torch.Generator().manual_seed(1), num_images=n)
    views = [IdentityView(), FlipView()]
    c2 = torch.randn(1, length, d, generator=g)

    def gen():
        return torch.Generator().manual_seed(2)

    t = timed({
        "pipe": lambda: pipe(prompt_embeds=cond.expand(n, -1, -1), negative_prompt_embeds=uncond.expand(n, -1, -1),
                             timesteps=ts, guidance_scale=7.0, generator=gen(), output_type="pt"),
        "cfg": lambda: iterative_denoise_cfg(x0, 0, pipe, cond, uncond, ts, 7.0, gen()),
        "two": lambda: denoise_loop(x0, ts, 0, pipe, two_pass_estimator(pipe, cond, uncond, 7.0), gen()),
        "ana": lambda: make_flip_illusion(pipe, cond, c2, uncond, ts, generator=gen(), num_images=n),
        "ana4": lambda: denoise_loop(x0, ts, 0, pipe, unbatched_anagram_estimator(pipe, views, [cond, c2], uncond, 7.0),
                                     gen()),
    }, repeats, lambda: sync(device))
    t_pipe = t["pipe"] / len(ts)                                 # the pipeline also steps at t = 0
    t_cfg, t_two, t_ana, t_ana4 = (t[k] / steps for k in ("cfg", "two", "ana", "ana4"))
    # sanity: the batched anagram estimator is the same maths as the unbatched one
    est_b = anagram_estimator(pipe, views, [cond, c2], uncond, 7.0)
    est_u = unbatched_anagram_estimator(pipe, views, [cond, c2], uncond, 7.0)
    with torch.no_grad():
        diff = (est_b(x0, 500)[0] - est_u(x0, 500)[0]).abs().max().item()
    assert diff < 1e-3, diff

    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    h = pipe.unet.config.sample_size
    label = f"{name} ({params:.1f}M params, {h}x{h}, N={n}, {steps} steps)" if config or pipe is not None else \
        f"{name} ({h}x{h}, N={n}, {steps} steps): loop cost without the network"
    ms = 1e3
    return [
        (label, float("nan"), ""),
        ("  IFPipeline CFG step", t_pipe * ms, "reference"),
        ("  diffnb CFG step (batch 2N)", t_cfg * ms, f"{t_pipe / t_cfg:.2f}x pipeline speed"),
        ("  diffnb CFG step, two passes (N + N)", t_two * ms, f"batched is {t_two / t_cfg:.2f}x faster"),
        ("  diffnb anagram step (batch 4N)", t_ana * ms, f"{t_ana / t_pipe:.2f}x a pipeline CFG step"),
        ("  diffnb anagram step, four passes", t_ana4 * ms, f"batched is {t_ana4 / t_ana:.2f}x faster"),
        ("  diffnb CFG sample, whole", t["cfg"] * ms, f"= {t['cfg']:.2f} s for {steps} steps, {n} images"),
    ]


def bench_full_size(repeats: int) -> list[tuple[str, float, str]]:
    if not torch.cuda.is_available():
        return [("full size: skipped (no CUDA GPU on this machine)", float("nan"), "")]
    device, dtype = torch.device("cuda"), torch.float16
    pipe = build(xl_config(), device, dtype)
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e9
    d = 4096
    g = torch.Generator().manual_seed(0)
    cond, uncond = (torch.randn(1, 77, d, generator=g).to(device, dtype) for _ in range(2))
    ts = strided_timesteps(pipe)                                 # 990, 960, ..., 0: 33 steps for diffnb

    def run_diffnb():
        gen = torch.Generator(device).manual_seed(2)
        return iterative_denoise_cfg(pure_noise(pipe, gen), 0, pipe, cond, uncond, ts, 7.0, gen)

    def run_pipe():
        gen = torch.Generator(device).manual_seed(2)
        return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, timesteps=ts, guidance_scale=7.0,
                    generator=gen, output_type="pt")

    rows = [(f"IF-I-XL-sized UNet ({params:.2f}B params, fp16, {torch.cuda.get_device_name()})", float("nan"), "")]
    for name, fn, n_steps in (("IFPipeline, 34 steps (incl. t=0)", run_pipe, len(ts)),
                              ("diffnb iterative_denoise_cfg, 33 steps", run_diffnb, len(ts) - 1)):
        torch.cuda.reset_peak_memory_stats()
        t = timed({name: fn}, repeats, lambda: sync(device))[name]
        peak = torch.cuda.max_memory_allocated() / 2**30
        rows.append((f"  {name}", t * 1e3, f"{t / n_steps * 1e3:.1f} ms/step, peak {peak:.2f} GiB"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--full-size", action="store_true", help="also time an IF-I-XL-sized fp16 UNet on CUDA")
    ap.add_argument("--skip-small", action="store_true", help="only the tiny model on CPU")
    ap.add_argument("--mini", action="store_true", help="also the trained mini model, 5 images (target: a 33-step "
                    "CFG sample of 5 images in under 3 s on 2 CPU cores)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    rows += bench_cpu_model("stub UNet", None, stride=30, repeats=args.repeats, n=1)
    rows += bench_cpu_model("tiny IF-shaped UNet", tiny_unet_config(), stride=30, repeats=args.repeats, n=1)
    if not args.skip_small:
        rows += bench_cpu_model("small IF-shaped UNet", small_config(), stride=165, repeats=args.repeats, n=1)
    if args.mini:
        from diffnb.mini.model import MAX_WORDS
        from diffnb.a.models import load_stage1
        rows += bench_cpu_model("mini (trained)", None, stride=30, repeats=args.repeats, n=5,
                                pipe=load_stage1("mini", device="cpu"), length=MAX_WORDS)
    if args.full_size:
        rows += bench_full_size(args.repeats)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, best of {args.repeats} interleaved runs")
    print(f"{'':52s} {'ms':>9s}")
    for label, ms, note in rows:
        print(f"{label:52s} {'' if ms != ms else f'{ms:9.1f}'} {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
