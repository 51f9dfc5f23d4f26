"""A stand-in for the gated DeepFloyd IF repo: tiny random weights in a Hugging Face cache layout.

``build_standin(cache_dir)`` writes ``cache_dir/models--DeepFloyd--IF-I-XL-v1.0/snapshots/<commit>/``
with the tiny IF-shaped UNet (``diffnb.a.models.tiny_unet_config``, fp32 plus an fp16 variant), IF's
scheduler, a one-layer seeded T5 encoder (d_model 4096) and a small T5 tokenizer trained on the course
prompts, plus ``refs/main`` and a marker ``diffnb-standin.json``.  With the hub offline and that folder
as the cache, ``load_stage1("deepfloyd")`` and ``encode_prompts`` load it exactly as they would the real
weights, so the ``seed`` profile's code path can be rehearsed on a CPU without the licence or a network.
The pictures are noise; only the code path is real.  A folder holding a real download is never touched.

Usage::

    python -m diffnb.a.standin --cache-dir DIR
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=DIR papermill notebooks/A1.5_sampling.ipynb out.ipynb -p profile seed -p device cpu
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from diffnb.a.models import IF_SCHEDULER_CONFIG, tiny_unet_config
from diffnb.a.prompts import COURSE_PROMPTS, EMBED_DIM

MARKER = "diffnb-standin.json"
EXTRA_WORDS = ("a an the of with and in on photo picture painting drawing oil crayon lithograph man woman dog "
               "cat hat ship rocket mountain village snowy people campfire old skull waterfalls caveman manatee "
               "high quality mid fall paint brush digit zero one two three four five six seven eight nine red blue")


def repo_folder(cache_dir: str | Path, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    corpus = [p for p in COURSE_PROMPTS if p] + EXTRA_WORDS.split() + [EXTRA_WORDS]
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    return T5TokenizerFast(tokenizer_object=tok, extra_ids=0, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           model_max_length=77)


@contextlib.contextmanager
def _quiet():
    """No progress bars or cast warnings from diffusers / transformers while saving."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog
    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error(); tlog.set_verbosity_error()
    dlog.disable_progress_bar(); tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0]); tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar(); tlog.enable_progress_bar()


def _build(folder: Path, seed: int) -> None:
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config()).eval()
        config = T5Config(vocab_size=len(tokenizer), d_model=EMBED_DIM, num_layers=1, num_decoder_layers=0,
                          num_heads=2, d_kv=8, d_ff=32, is_encoder_decoder=False, use_cache=False,
                          feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True)
        encoder = T5EncoderModel(config).eval()
    pipe = IFPipeline(tokenizer=tokenizer, text_encoder=encoder, unet=unet, scheduler=DDPMScheduler(**IF_SCHEDULER_CONFIG),
                      safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    # the fp16 variant files first (copies), then the fp32 pipeline, whose configs (dtype float32) win
    with _quiet():
        copy.deepcopy(unet).to(torch.float16).save_pretrained(str(folder / "unet"), variant="fp16")
        copy.deepcopy(encoder).to(torch.float16).save_pretrained(str(folder / "text_encoder"), variant="fp16")
        pipe.save_pretrained(str(folder), safe_serialization=True)


def build_standin(cache_dir: str | Path, repo_id: str = "DeepFloyd/IF-I-XL-v1.0", seed: int = 0) -> Path:
    """Write the stand-in repo into the Hugging Face cache ``cache_dir``; returns the snapshot folder.

    Refuses (``FileExistsError``) when the repo folder exists without the stand-in marker: that is a real
    download, never overwritten.  An earlier stand-in is replaced.
    """
    cache_dir = Path(cache_dir)
    repo = repo_folder(cache_dir, repo_id)
    if repo.exists() and not any(repo.glob(f"snapshots/*/{MARKER}")):
        raise FileExistsError(f"{repo} exists and is not a diffnb stand-in (no {MARKER}): it may be a real download "
                              "of the DeepFloyd weights, which build_standin never overwrites. Pick another "
                              "--cache-dir (an empty folder), or remove that folder yourself.")
    commit = hashlib.sha1(f"diffnb-standin:{repo_id}:{seed}".encode()).hexdigest()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".standin-", dir=cache_dir))
    try:
        snap = tmp / "snapshots" / commit
        _build(snap, seed)
        (snap / MARKER).write_text(json.dumps({"stand_in_for": repo_id, "seed": seed, "by": "diffnb.a.standin"}, indent=1))
        (tmp / "refs").mkdir()
        (tmp / "refs" / "main").write_text(commit)
        # what a real download leaves: the hub cache records files the repo does not have, so that offline
        # lookups of them (transformers asks for tokenizer/config.json) answer "absent" instead of failing
        no_exist = tmp / ".no_exist" / commit / "tokenizer"
        no_exist.mkdir(parents=True)
        (no_exist / "config.json").touch()
        if repo.exists():
            shutil.rmtree(repo)
        tmp.rename(repo)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return repo / "snapshots" / commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffnb.a.standin", description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, required=True, help="the Hugging Face cache folder to write into")
    parser.add_argument("--repo-id", default="DeepFloyd/IF-I-XL-v1.0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    snap = build_standin(args.cache_dir, args.repo_id, args.seed)
    size = sum(f.stat().st_size for f in snap.rglob("*") if f.is_file())
    print(f"stand-in: {snap} ({size / 1e6:.1f} MB)")
    print(f"use: HF_HUB_OFFLINE=1 HF_HUB_CACHE={args.cache_dir} papermill notebooks/A1.5_sampling.ipynb out.ipynb "
          "-p profile seed -p device cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
