"""The stage-1 model bundle of Part A: three sources, one loading path.

Conventions (stated once):
  * A *bundle* (``stage1``) is anything with ``.unet`` and ``.scheduler``: the UNet is called as
    ``unet(x, t, encoder_hidden_states=e).sample`` and returns ``2C`` channels (noise estimate, then
    the learned-range variance); the scheduler is a diffusers ``DDPMScheduler``. A diffusers
    ``IFPipeline`` is such a bundle, and ``load_stage1`` returns one.
  * Every source goes through the same ``IFPipeline.from_pretrained`` call, without the T5 text
    encoder (prompt embeddings come from ``diffnb.a.prompts``); only the path or hub id and the dtype
    differ:

      ``deepfloyd``  the real ``DeepFloyd/IF-I-{XL,L,M}-v1.0`` weights (gated; fp16 on CUDA, fp32 on CPU)
      ``mini``       ``data/models/mini-if/``, a small IF-compatible model the pack trains (``diffnb.mini.model``)
      ``tiny``       ``data/models/tiny-if/``, random IF-shaped weights for tests (``make-tiny``)

  * Sizes are read from ``unet.config`` (``sample_size``, ``in_channels``); devices come from
    ``diffnb.core.devices.get_device``.  Hub tokens come only from the environment or ``huggingface-cli
    login``; nothing here passes a token or ``trust_remote_code``.

Command line: ``python -m diffnb.a.models make-tiny`` (re)creates ``data/models/tiny-if/`` and
``data/embeddings/tiny-if.safetensors``, deterministically.
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from diffnb.core.devices import get_device
from diffnb.core.paths import data_dir

MODELS = ("deepfloyd", "mini", "tiny")
VARIANTS = {"XL": "DeepFloyd/IF-I-XL-v1.0", "L": "DeepFloyd/IF-I-L-v1.0", "M": "DeepFloyd/IF-I-M-v1.0"}
LICENCE_URL = "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0"

#: DeepFloyd IF stage 1's scheduler (IF-I-*-v1.0/scheduler/scheduler_config.json, as written by
#: diffusers' scripts/convert_if.py): cosine betas, learned-range variance, Imagen dynamic thresholding.
IF_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.0001,
    beta_end=0.02,
    variance_type="learned_range",
    prediction_type="epsilon",
    thresholding=True,
    dynamic_thresholding_ratio=0.95,
    sample_max_value=1.5,
    clip_sample=True,
    clip_sample_range=1.0,
    steps_offset=0,
)

#: IF-I-XL's UNet layout with tiny widths. Like IF: ResNet-only first level, SimpleCrossAttn blocks
#: below it (self-attention + added K/V from the text), the SimpleCrossAttn mid block, scale-shift
#: time conditioning, GELU, group-norm on the text, T5 states (4096) projected by ``text_proj``,
#: 3 channels in and 6 out. One difference: IF also pools the T5 states into the time embedding
#: (``addition_embed_type="text"``, a 64-head attention pooling over 4096 dims = 3 x 4096^2 = 50M
#: weights, 100 MB in fp16); that cannot be made tiny, so the tiny model leaves it out
#: (``pooled_text=True`` in ``tiny_unet_config`` puts it back).
TINY_UNET_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=6,                                   # noise (3) + learned-range variance (3)
    layers_per_block=1,                               # IF-I-XL: 3
    block_out_channels=(32, 64),                      # IF-I-XL: 4 levels, hundreds of channels
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,                             # IF-I-XL: 64
    encoder_hid_dim=4096,                             # T5-XXL hidden size
    encoder_hid_dim_type="text_proj",
    addition_embed_type=None,                         # IF: "text" (see above)
    addition_embed_type_num_heads=64,
    class_embed_type=None,
    cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift",
    act_fn="gelu",
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
    upcast_attention=False,
    use_linear_projection=False,
)


def tiny_unet_config(pooled_text: bool = False, **overrides) -> dict:
    """The tiny IF-shaped UNet config; ``pooled_text=True`` adds IF's pooled text embedding (+50M weights)."""
    cfg = dict(TINY_UNET_CONFIG)
    if pooled_text:
        cfg["addition_embed_type"] = "text"
    cfg.update(overrides)
    return cfg


def model_dir(model: str) -> Path:
    """Folder of a shipped model: ``data/models/{tiny,mini}-if``."""
    if model not in ("tiny", "mini"):
        raise ValueError(f"only 'tiny' and 'mini' live in data/models, got {model!r}")
    return data_dir() / "models" / f"{model}-if"


def _parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
             "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if isinstance(dtype, str) and dtype.lower() in names:
        return names[dtype.lower()]
    raise ValueError(f"unknown dtype {dtype!r}; use torch.float16 / 'fp16' or torch.float32 / 'fp32'")


@contextlib.contextmanager
def _quiet_diffusers():
    """Hide diffusers' loading progress bar and info warnings for one call, then restore them."""
    from diffusers.utils import logging as diffusers_logging
    verbosity, bar = diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
        if bar:
            diffusers_logging.enable_progress_bar()


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]    # HfHubHTTPError, GatedRepoError, LocalEntryNotFoundError ...
    try:
        from huggingface_hub.errors import EntryNotFoundError
        errors.append(EntryNotFoundError)
    except ImportError:                               # pragma: no cover - older huggingface_hub
        pass
    for mod in ("httpx", "requests"):
        try:
            errors.append(__import__(mod).exceptions.RequestException if mod == "requests"
                          else __import__(mod).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def load_stage1(model: str = "tiny", device: str | torch.device = "auto", variant: str = "XL",
                dtype: torch.dtype | str | None = None, cpu_offload: bool = False,
                cache_dir: str | Path | None = None):
    """Load the stage-1 bundle: a diffusers ``IFPipeline`` without T5, safety checker or watermarker.

    Args:
        model: ``"tiny"`` (random weights, tests), ``"mini"`` (trained on the digit world, 32x32) or ``"deepfloyd"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ... (see ``diffnb.core.devices.get_device``).
        variant: for ``deepfloyd``: ``"XL"`` (4.3B), ``"L"`` or ``"M"``.
        dtype: default fp16 for ``deepfloyd`` on CUDA, fp32 otherwise. fp16 on CPU is refused.
        cpu_offload: keep the UNet in CPU memory and move it to the GPU for each call (accelerate's
            ``enable_model_cpu_offload``); needs CUDA.
        cache_dir: Hugging Face cache folder for ``deepfloyd`` (default: the usual HF cache).

    Returns the ``IFPipeline`` (checked with ``check_bundle``), its progress bar off.
    """
    from diffusers import IFPipeline

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(repr(m) for m in MODELS)} "
                         "('mini' and 'tiny' ship with the pack and work offline)")
    dev = get_device(device)
    dtype = _parse_dtype(dtype)
    if dtype is None:
        dtype = torch.float16 if (model == "deepfloyd" and dev.type == "cuda") else torch.float32
    if dtype == torch.float16 and dev.type == "cpu":
        raise ValueError("fp16 on the CPU is refused: half-precision convolutions are unsupported or very slow "
                         "on CPUs. Use dtype=torch.float32 on the CPU, or run on a CUDA GPU (device='cuda').")
    if cpu_offload and dev.type != "cuda":
        raise ValueError(f"cpu_offload=True moves the UNet to a CUDA GPU for each call, but the device is "
                         f"{dev.type!r}; use cpu_offload=False on this machine")

    kwargs: dict = {}
    if model == "deepfloyd":
        key = str(variant).upper()
        if key not in VARIANTS:
            raise ValueError(f"unknown DeepFloyd variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        source = VARIANTS[key]
        if dtype == torch.float16:
            kwargs["variant"] = "fp16"                  # the repos ship fp16 weight files
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
    else:
        folder = model_dir(model)
        if not (folder / "model_index.json").is_file():
            if model == "mini":
                raise FileNotFoundError(
                    f"the 'mini' model is missing ({folder}); retrain it with `python -m diffnb.mini.model train --overwrite-shipped` "
                    "(minutes on a GPU, hours on 2 CPU cores), or restore data/models/mini-if from the repository")
            raise FileNotFoundError(f"the 'tiny' model is missing ({folder}); recreate it with "
                                    "`python -m diffnb.a.models make-tiny`")
        source = str(folder)
        from diffnb.core.runs import verify_folder
        verify_folder(folder, _remake_hint(model))       # a flipped byte is refused here, by name, with the fix

    try:
        with _quiet_diffusers():
            pipe = IFPipeline.from_pretrained(
                source, text_encoder=None, tokenizer=None, safety_checker=None, feature_extractor=None,
                watermarker=None, requires_safety_checker=False, dtype=dtype, **kwargs)
    except Exception as err:
        if model != "deepfloyd":
            raise _damaged_folder_error(Path(source), _remake_hint(model), err) from err
        if not isinstance(err, _hub_errors()):
            raise
        raise RuntimeError(
            f"could not load {source} ({type(err).__name__}). The DeepFloyd IF weights are gated: "
            f"1) accept the licence at {LICENCE_URL} (and the variant's page), "
            "2) log in with `huggingface-cli login` or set the HF_TOKEN environment variable, "
            "3) check the network (and that HF_HUB_OFFLINE is not set) for the first download, "
            "or 4) use model='tiny' or model='mini', which work offline.") from err

    if cpu_offload:
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)
        if dev.type == "cpu":
            # CPU convolutions run about a fifth faster on channels-last weights (same results to ~1e-5)
            pipe.unet.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    return check_bundle(pipe)


def _remake_hint(model: str) -> str:
    if model == "tiny":
        return "re-create it with `python -m diffnb.a.models make-tiny`"
    return ("restore the shipped copy with `git checkout -- data/models/mini-if` (or retrain it, see "
            "`python -m diffnb.mini.model train --help`)")


def _damaged_file(path: Path) -> str | None:
    """Why ``path`` (a .safetensors or .json file of a model folder) cannot be read, or None if it can."""
    import json
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key)                       # header and offsets; the data is checked by its size
        elif path.suffix == ".json":
            json.loads(path.read_text())
    except Exception as err:                                # SafetensorError, JSONDecodeError, UnicodeError ...
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    return None


def _damaged_folder_error(folder: Path, hint: str, err: BaseException) -> RuntimeError:
    """One clear error for a model folder that diffusers could not load: the damaged file and the fix."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".safetensors", ".json"):
            why = _damaged_file(path)
            if why is not None:
                return RuntimeError(f"the model file {path} is damaged ({why}); {hint}")
    first = str(err).splitlines()[0][:200] if str(err) else ""
    return RuntimeError(f"could not load the model folder {folder} ({type(err).__name__}: {first}); "
                        f"its files may be damaged or incomplete: {hint}")


def check_bundle(bundle):
    """Check that ``bundle`` can drive Part A and return it unchanged.

    It needs ``.unet`` whose ``config`` has ``in_channels`` C and ``out_channels`` 2C (noise + variance),
    and ``.scheduler``, a ``DDPMScheduler`` with learned-range variance predicting epsilon.
    """
    missing = [name for name in ("unet", "scheduler") if getattr(bundle, name, None) is None]
    if len(missing) == 2:
        got = "None" if bundle is None else f"a {type(bundle).__name__}"
        raise TypeError(f"stage1 must be a stage-1 bundle with .unet and .scheduler, got {got}; load one with "
                        "diffnb.a.models.load_stage1('mini') (or 'tiny', 'deepfloyd')")
    if missing:
        raise ValueError(f"the stage-1 bundle ({type(bundle).__name__}) has no {' or '.join('.' + m for m in missing)}; "
                         "pass load_stage1(...) or any object with .unet and .scheduler")
    cfg = getattr(bundle.unet, "config", None)
    c_in, c_out = getattr(cfg, "in_channels", None), getattr(cfg, "out_channels", None)
    if c_in is None or c_out is None:
        raise ValueError("the UNet has no config.in_channels / config.out_channels; use a diffusers "
                         "UNet2DConditionModel (as load_stage1 does)")
    if c_out != 2 * c_in:
        raise ValueError(f"the UNet outputs {c_out} channels for {c_in} input channels; Part A needs "
                         f"2 x {c_in} = {2 * c_in} (noise estimate + learned-range variance, like DeepFloyd IF "
                         f"stage 1). Use load_stage1(...) or a UNet with out_channels={2 * c_in}")
    sched = bundle.scheduler
    cfg = getattr(sched, "config", None)
    needs = ("num_train_timesteps", "variance_type", "prediction_type", "thresholding", "clip_sample")
    # what diffnb.a.schedule.Schedule reads: alphas_cumprod, init_noise_sigma and these config entries
    if not (hasattr(sched, "alphas_cumprod") and hasattr(sched, "init_noise_sigma") and cfg is not None
            and all(hasattr(cfg, k) for k in needs)):
        raise ValueError(f"the scheduler ({type(sched).__name__}) is not a diffusers DDPMScheduler; "
                         "build it with DDPMScheduler(**diffnb.a.models.IF_SCHEDULER_CONFIG)")
    if sched.config.variance_type != "learned_range":
        raise ValueError(f"the scheduler's variance_type is {sched.config.variance_type!r}; the UNet's variance "
                         "channels need 'learned_range' (DeepFloyd IF's setting)")
    if sched.config.prediction_type != "epsilon":
        raise ValueError(f"the scheduler's prediction_type is {sched.config.prediction_type!r}; Part A's "
                         "formulas assume the UNet predicts the noise ('epsilon')")
    if cfg.thresholding and not all(hasattr(cfg, k) for k in ("dynamic_thresholding_ratio", "sample_max_value")):
        raise ValueError("the scheduler asks for dynamic thresholding but its config has no dynamic_thresholding_ratio "
                         "/ sample_max_value; build it with DDPMScheduler(**diffnb.a.models.IF_SCHEDULER_CONFIG)")
    if cfg.clip_sample and not cfg.thresholding and not hasattr(cfg, "clip_sample_range"):
        raise ValueError("the scheduler asks for clip_sample but its config has no clip_sample_range; build it with "
                         "DDPMScheduler(**diffnb.a.models.IF_SCHEDULER_CONFIG)")
    return bundle


def make_tiny_model(path: str | Path | None = None, seed: int = 0, pooled_text: bool = False,
                    weight_dtype: torch.dtype = torch.float16) -> Path:
    """Write the tiny IF-shaped stage-1 model (random weights from ``seed``) as a diffusers folder.

    The folder holds ``model_index.json``, ``unet/`` (config + safetensors, stored in ``weight_dtype``
    to stay under 2 MB; ``load_stage1`` upcasts) and ``scheduler/`` (IF's config). Same seed, same bytes.
    Returns the folder.
    """
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel

    path = Path(path) if path is not None else model_dir("tiny")
    with torch.random.fork_rng(devices=[]):            # seeded without touching the caller's RNG
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config(pooled_text=pooled_text))
    with _quiet_diffusers():                           # the fp16 cast warns about modules it does not have
        unet = unet.to(weight_dtype).eval()
    scheduler = DDPMScheduler(**IF_SCHEDULER_CONFIG)
    pipe = IFPipeline(tokenizer=None, text_encoder=None, unet=unet, scheduler=scheduler, safety_checker=None,
                      feature_extractor=None, watermarker=None, requires_safety_checker=False)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return path


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    from diffnb.a.prompts import COURSE_PROMPTS, default_embeddings_path, make_random_embeddings

    parser = argparse.ArgumentParser(prog="python -m diffnb.a.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("make-tiny", help="(re)create data/models/tiny-if and data/embeddings/tiny-if.safetensors")
    tiny.add_argument("--out", type=Path, default=None, help="model folder (default data/models/tiny-if)")
    tiny.add_argument("--embeddings", type=Path, default=None,
                      help="embeddings file (default data/embeddings/tiny-if.safetensors)")
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "make-tiny":
        folder = make_tiny_model(args.out, seed=args.seed)
        emb_path = args.embeddings or default_embeddings_path("tiny")
        make_random_embeddings(COURSE_PROMPTS, seed=args.seed).save(emb_path, dtype=torch.float16)
        print(f"tiny model:  {folder}  ({_folder_size(folder) / 1e6:.2f} MB)")
        print(f"embeddings:  {emb_path}  ({emb_path.stat().st_size / 1e6:.2f} MB, {len(COURSE_PROMPTS)} prompts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
