"""Named settings for the notebooks: ``quick`` (CPU, minutes, offline) and ``seed`` (the write-up).

A notebook's ``parameters`` cell names a profile and may override single settings; ``None``
means "the profile's value".  Two notebooks that resolve the same settings find the same
checkpoint folder, so a sampling notebook reads what its training notebook wrote.
"""
from __future__ import annotations

from dataclasses import dataclass

from .train import TrainConfig

PROFILES = ("quick", "seed")

# ------------------------------------------------------------------------------------ Part B
# The write-up (Part B): denoisers D=128, batch 256, Adam 1e-4, 5 epochs; flow matching D=64,
# batch 64, Adam 1e-2 with ExponentialLR(gamma = 0.1 ** (1 / epochs)), 10 epochs, p_uncond 0.1,
# CFG 5; the no-scheduler run at a constant 1e-3.
_DENOISER_SEED = dict(num_hiddens=128, batch_size=256, lr=1e-4, epochs=5, lr_decay=False)
_FM_SEED = dict(num_hiddens=64, batch_size=64, lr=1e-2, epochs=10, lr_decay=True)

# quick: the same recipes, smaller (D, images per epoch) so that all of Part B trains on two CPU
# cores in minutes.  Epoch counts stay as in the write-up, so "after epoch 1, 5, 10" still means
# something; an epoch is simply a smaller slice of the training set.
_DENOISER_QUICK = dict(num_hiddens=16, batch_size=64, lr=1e-3, epochs=5, lr_decay=False, train_limit=1536)
_FM_QUICK = dict(num_hiddens=32, batch_size=64, lr=1e-2, epochs=10, lr_decay=True, train_limit=2048)
# the class-conditioned runs get half as much again: they carry the "legible digits by 2.6" promise
_CLASS_FM_QUICK = dict(_FM_QUICK, train_limit=3072)

PART_B_RUNS = {
    # run name: (objective, extra settings, notebook that trains it, {profile: settings})
    "denoiser": ("denoise", dict(sigma=0.5), "B1.2_denoiser.ipynb",
                 {"seed": _DENOISER_SEED, "quick": _DENOISER_QUICK}),
    "pure_noise": ("pure_noise", {}, "B1.2_denoiser.ipynb",
                   {"seed": _DENOISER_SEED, "quick": _DENOISER_QUICK}),
    "time_fm": ("time_fm", {}, "B2.2_train_time_conditioned.ipynb",
                {"seed": _FM_SEED, "quick": _FM_QUICK}),
    "class_fm": ("class_fm", dict(p_uncond=0.1), "B2.5_train_class_conditioned.ipynb",
                 {"seed": _FM_SEED, "quick": _CLASS_FM_QUICK}),
    "class_fm_constant_lr": ("class_fm", dict(p_uncond=0.1, lr=1e-3, lr_decay=False),
                             "B2.7_no_scheduler.ipynb",
                             {"seed": _FM_SEED, "quick": dict(_CLASS_FM_QUICK, lr=1e-3)}),
}


@dataclass(frozen=True)
class SampleSettings:
    num_ts: int            # Euler steps from t=0 to t=1
    guidance_scale: float  # CFG gamma for class-conditional sampling
    seed: int              # sampling seed


PART_B_SAMPLING = {
    # the write-up gives gamma = 5 and no step count; 50 Euler steps is plenty for these straight paths
    "seed": SampleSettings(num_ts=50, guidance_scale=5.0, seed=0),
    "quick": SampleSettings(num_ts=50, guidance_scale=5.0, seed=0),
}

DATA_BY_PROFILE = {"seed": "mnist", "quick": "synthetic"}


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {list(PROFILES)} "
                         "(quick: CPU in minutes, offline; seed: the write-up's settings)")
    return profile


def resolve_data(data: str, profile: str) -> str:
    """``auto`` -> the profile's data: real MNIST for ``seed``, diffnb's rendered digits for
    ``quick`` (offline and reproducible, what the committed outputs and CI use)."""
    check_profile(profile)
    if data == "auto":
        return DATA_BY_PROFILE[profile]
    if data not in ("mnist", "synthetic"):
        raise ValueError(f"data must be 'auto', 'mnist' or 'synthetic', got {data!r}")
    return data


def part_b_config(run: str, profile: str = "quick", data: str = "auto", **overrides) -> TrainConfig:
    """The training settings of one Part B run under ``profile``; ``None`` overrides are ignored.

    >>> part_b_config("class_fm", "seed").lr
    0.01
    """
    if run not in PART_B_RUNS:
        raise ValueError(f"unknown Part B run {run!r}; choose one of {sorted(PART_B_RUNS)}")
    check_profile(profile)
    objective, extra, notebook, by_profile = PART_B_RUNS[run]
    settings = {**by_profile[profile], **extra}
    if run == "class_fm_constant_lr" and profile == "quick":
        settings["lr"] = 1e-3
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["data"] = resolve_data(data, profile)
    unknown = set(settings) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: "
                         f"{sorted(set(TrainConfig.__dataclass_fields__) - {'name', 'objective', 'notebook'})}")
    return TrainConfig(name=run, objective=objective, notebook=notebook, **settings)


def part_b_sampling(profile: str = "quick", **overrides) -> SampleSettings:
    check_profile(profile)
    base = PART_B_SAMPLING[profile].__dict__.copy()
    base.update({k: v for k, v in overrides.items() if v is not None})
    return SampleSettings(**base)


# ------------------------------------------------------------------------------------ Part A
# The write-up (Part A): DeepFloyd IF stage 1, seed 100 for every sampling run, CFG gamma = 7,
# SDEdit start indices [1, 3, 5, 7, 10, 20] on the strided list 990, 960, ..., 30, 0.
# quick: the same settings on the offline ``mini`` model (32x32, trained by the pack on its digit
# world), with prompts and inputs from that world. ``tiny`` (random weights) takes the seed
# profile's prompts, whose embeddings ship in data/embeddings/tiny-if.safetensors.
_WRITE_UP_PROMPTS = dict(
    picture="a high quality picture",                                   # 1.3-1.7
    samples=["an oil painting of a snowy mountain village",             # section 0
             "a man wearing a hat", "a rocket ship"],
    crayon="a high quality crayon drawing",                             # 1.7.3
    pairs=[("a man mid fall", "a paint brush"),                         # 1.8
           ("a photo of a caveman", "a photo of a manatee")],
    hybrid_pairs=[("a man mid fall", "a paint brush"),                  # 1.9 (low, high frequency)
                  ("a photo of a caveman", "a photo of a manatee")],
)
_WRITE_UP_IMAGES = dict(
    image="data/images/rocket.jpg",                                     # 1.1-1.4
    photos=["data/images/rocket.jpg", "data/images/astronaut.jpg", "data/images/cat.jpg"],
    web="data/images/coffee.jpg",
    sketches=["data/images/sketch_cube.png", "data/images/sketch_flower.png"],
    masks=["data/masks/rocket_top.png", "data/masks/astronaut_face.png", "data/masks/cat_nose.png"],
)
_MINI_PROMPTS = dict(
    picture="a high quality picture",
    samples=["a photo of the digit 7", "a crayon drawing of the number three", "a pencil sketch of a 2"],
    crayon="a high quality crayon drawing",
    # screened with benchmarks/illusion_pairs.py on seeds the reported figures do not use; 3 / 5 stays
    # as the failure to look at
    pairs=[("a pencil sketch of the digit 4", "a pencil sketch of the digit 7"),
           ("a photo of the digit 7", "a photo of the digit 2"),
           ("a photo of the digit 3", "a photo of the digit 5")],
    # (far, near): screened like the anagram pairs; crayon 0 / pencil 4 stays as the failure to look at
    hybrid_pairs=[("a photo of the digit 1", "a pencil sketch of the digit 4"),
                  ("a photo of the digit 1", "a pencil sketch of the digit 7"),
                  ("a crayon drawing of the digit 0", "a pencil sketch of the digit 4")],
)
_MINI_IMAGES = dict(
    image="data/images/world/photo_4.png",
    photos=["data/images/world/photo_4.png", "data/images/world/photo_7.png", "data/images/world/pencil_2.png"],
    web="data/images/world/crayon_5.png",
    sketches=["data/images/world/hand_drawn_3.png", "data/images/world/hand_drawn_6.png"],
    masks=["data/masks/world_top.png", "data/masks/world_left.png", "data/masks/world_centre.png"],
)
_PART_A_COMMON = dict(seed=100, guidance_scale=7.0, i_starts=[1, 3, 5, 7, 10, 20], stride=30, hybrid_sigma=2.0)

PART_A = {
    "quick": dict(model="mini", prompts=_MINI_PROMPTS, images=_MINI_IMAGES, **_PART_A_COMMON),
    "seed": dict(model="deepfloyd", prompts=_WRITE_UP_PROMPTS, images=_WRITE_UP_IMAGES, **_PART_A_COMMON),
}
#: the prompts and images that suit each model, when ``model`` overrides the profile's
MODEL_INPUTS = {"mini": (_MINI_PROMPTS, _MINI_IMAGES), "tiny": (_WRITE_UP_PROMPTS, _WRITE_UP_IMAGES),
                "deepfloyd": (_WRITE_UP_PROMPTS, _WRITE_UP_IMAGES)}


def part_a_settings(profile: str = "quick", **overrides) -> dict:
    """The Part A settings of ``profile`` (a fresh dict); ``None`` overrides keep the profile's value.

    >>> part_a_settings("seed")["model"]
    'deepfloyd'
    """
    if profile not in PART_A:
        raise ValueError(f"unknown profile {profile!r}; use one of {list(PART_A)} "
                         "(quick: the offline mini model on a CPU; seed: the write-up's DeepFloyd IF run, GPU)")
    import copy
    settings = copy.deepcopy(PART_A[profile])
    unknown = set(overrides) - set(settings)
    if unknown:
        raise ValueError(f"unknown Part A setting(s) {sorted(unknown)}; known: {sorted(settings)}")
    model = overrides.get("model")
    if model is not None and model != settings["model"]:
        if model not in MODEL_INPUTS:
            raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODEL_INPUTS)}")
        prompts, images = MODEL_INPUTS[model]          # prompts the model knows, inputs of its kind
        settings["prompts"], settings["images"] = copy.deepcopy(prompts), copy.deepcopy(images)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings
