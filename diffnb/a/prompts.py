"""Prompt embeddings for DeepFloyd IF stage 1: from a file, or from T5 (computed once, cached).

Conventions (stated once):
  * An embedding is a tensor ``(1, L, D)``: T5-XXL hidden states, L = 77 tokens, D = 4096 for IF.
  * ``""`` is the unconditional (null) prompt used by classifier-free guidance.
  * An embeddings file maps prompt -> ``(1, 77, 4096)`` tensor, the form courses ship for IF:
    ``.safetensors`` (keys are the prompts) or a ``.pth`` dict read with ``weights_only=True``.
  * Nothing here downloads at run time unless asked to (``encode_prompts(..., local_files_only=False)``).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from diffnb.core.paths import build_dir, data_dir

DEFAULT_T5_REPO = "DeepFloyd/IF-I-XL-v1.0"
MAX_LENGTH = 77                      # IF's T5 was trained with 77 tokens (diffusers IFPipeline.encode_prompt)
EMBED_DIM = 4096                     # T5-XXL hidden size

#: The prompts the notebooks use (the write-up's prompts plus a few); ``""`` is the null prompt.
COURSE_PROMPTS: tuple[str, ...] = (
    "",
    "a high quality picture",
    "an oil painting of a snowy mountain village",
    "a man wearing a hat",
    "a rocket ship",
    "a high quality crayon drawing",
    "a man mid fall",
    "a paint brush",
    "a photo of a caveman",
    "a photo of a manatee",
    "an oil painting of people around a campfire",
    "an oil painting of an old man",
    "a lithograph of waterfalls",
    "a lithograph of a skull",
    # beyond the write-up (A1.9a, A1.9b): the seed profile's views and factorized hybrids
    "an oil painting of a horse",
    "an oil painting of a dog",
    "an oil painting of a rabbit",
    "a lithograph of a waterfall",
    "a lithograph of a teddy bear",
    "an oil painting of a ship",
    "an oil painting of a mountain",
    "an oil painting of a flower",
)


class PromptNotFoundError(KeyError, ValueError):
    """A prompt that is not in the embeddings; the message lists those that are."""

    def __str__(self) -> str:                              # KeyError would print the repr with quotes
        return str(self.args[0]) if self.args else ""


def _as_embedding(prompt: str, value) -> torch.Tensor:
    if not torch.is_tensor(value):
        raise TypeError(f"embedding for {prompt!r} is a {type(value).__name__}, expected a tensor (1, L, D)")
    if value.dim() == 2:                                    # (L, D) -> (1, L, D)
        value = value.unsqueeze(0)
    if value.dim() != 3 or value.shape[0] != 1:
        raise ValueError(f"embedding for {prompt!r} has shape {tuple(value.shape)}; expected (1, L, D) "
                         f"such as (1, {MAX_LENGTH}, {EMBED_DIM})")
    if not value.is_floating_point():
        raise TypeError(f"embedding for {prompt!r} has dtype {value.dtype}; expected a float tensor")
    return value


class PromptEmbeddings:
    """A table prompt -> embedding ``(1, L, D)``.

    ``get(prompt)`` returns the tensor (optionally moved to ``device``/``dtype``); a missing prompt
    raises ``PromptNotFoundError`` (a ``KeyError`` and ``ValueError``) listing the prompts that exist.
    """

    def __init__(self, table: Mapping[str, torch.Tensor], source: str | Path | None = None):
        self._table = {str(k): _as_embedding(str(k), v) for k, v in table.items()}
        self.source = str(source) if source is not None else None
        shapes = {tuple(v.shape[1:]) for v in self._table.values()}
        if len(shapes) > 1:
            raise ValueError(f"embeddings in {self.source or 'the table'} disagree in shape: {sorted(shapes)}")

    @property
    def prompts(self) -> list[str]:
        return list(self._table)

    def __contains__(self, prompt: object) -> bool:
        return prompt in self._table

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        shape = tuple(next(iter(self._table.values())).shape) if self._table else ()
        return f"PromptEmbeddings({len(self)} prompts, shape {shape}, source={self.source!r})"

    def get(self, prompt: str, device: str | torch.device | None = None,
            dtype: torch.dtype | None = None) -> torch.Tensor:
        """The embedding ``(1, L, D)`` of ``prompt`` (``""`` = unconditional)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if prompt not in self._table:
            listing = "\n".join(f"  {p!r}" for p in self._table)
            where = f" in {self.source}" if self.source else ""
            raise PromptNotFoundError(
                f"no embedding for prompt {prompt!r}{where}. Prompts available:\n{listing}\n"
                "Pick one of these, or compute new ones with diffnb.a.prompts.encode_prompts (needs the T5 weights).")
        return self._table[prompt].to(device=device, dtype=dtype)

    __getitem__ = get

    @property
    def uncond(self) -> torch.Tensor:
        """The unconditional (null prompt ``""``) embedding ``(1, L, D)``."""
        return self.get("")

    def save(self, path: str | Path, dtype: torch.dtype | None = torch.float16) -> Path:
        """Write the table as ``.safetensors`` (keys are the prompts) or ``.pth``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = {p: (v.to(dtype) if dtype is not None else v).contiguous() for p, v in self._table.items()}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file
            save_file(table, str(path), metadata={"format": "pt"})    # one key: safetensors orders keys at random
        else:
            torch.save(table, path)
        return path


def default_embeddings_path(model: str = "tiny") -> Path:
    """``data/embeddings/{model}-if.safetensors`` (the file that ships with the pack for ``model``)."""
    return data_dir() / "embeddings" / f"{model}-if.safetensors"


def load_embeddings(path: str | Path | None = None) -> PromptEmbeddings:
    """Read an embeddings file (``.safetensors`` or ``.pth``/``.pt``); default: the tiny model's file."""
    path = Path(path) if path is not None else default_embeddings_path("tiny")
    if not path.is_file():
        raise FileNotFoundError(
            f"embeddings file not found: {path}. The pack ships {default_embeddings_path('tiny')} "
            "(recreate it with `python -m diffnb.a.models make-tiny`); a course .pth file goes under data/embeddings/.")
    if path.suffix == ".safetensors":
        table = _read_safetensors(path, _remake_hint(path))
    elif path.suffix in (".pth", ".pt"):
        import pickle
        try:
            table = torch.load(path, map_location="cpu", weights_only=True)   # never unpickle code
        except pickle.UnpicklingError as err:
            blocked = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "Unsupported" in line]
            detail = f" ({blocked[0][:120]})" if blocked else ""
            raise ValueError(f"{path} is refused: it holds more than tensors{detail}, and diffnb loads only "
                             "tensors from a .pth file (torch.load(weights_only=True) never runs code from a file). "
                             "Use embeddings from a source you trust, saved as a dict prompt -> tensor "
                             "(torch.save({prompt: tensor}, path), or PromptEmbeddings.save)") from None
        except (RuntimeError, EOFError, OSError) as err:
            first = str(err).splitlines()[0].split(". ")[0][:120] if str(err) else ""
            raise ValueError(f"{path} is damaged or not a torch file ({type(err).__name__}: {first}); "
                             f"{_remake_hint(path)}") from None
        if not isinstance(table, Mapping):
            raise ValueError(f"{path} holds a {type(table).__name__}; expected a dict prompt -> tensor (1, 77, 4096)")
    else:
        raise ValueError(f"unknown embeddings format {path.suffix!r} for {path}; use .safetensors or .pth")
    return PromptEmbeddings(table, source=path)


def _remake_hint(path: Path) -> str:
    if path.resolve() == default_embeddings_path("tiny").resolve():
        return ("re-create it with `python -m diffnb.a.models make-tiny` (or restore it with "
                f"`git checkout -- data/embeddings/{path.name}`)")
    return "re-create it (PromptEmbeddings.save writes one) or copy it again from where it came"


def _read_safetensors(path: Path, hint: str) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with one clear error naming the file and ``hint`` when it is damaged."""
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except Exception as err:                                # SafetensorError (header, truncation), OSError ...
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        first = str(err).splitlines()[0][:160] if str(err) else ""
        raise ValueError(f"the embeddings file {path} is damaged ({type(err).__name__}: {first}); {hint}") from None


def make_random_embeddings(prompts: Sequence[str] = COURSE_PROMPTS, seed: int = 0,
                           shape: tuple[int, int] = (MAX_LENGTH, EMBED_DIM)) -> PromptEmbeddings:
    """Deterministic random-but-fixed embeddings ``(1, *shape)``, one per prompt, for the tiny model.

    Each prompt's tensor depends only on ``seed`` and the prompt text (not on the order of the list),
    so adding a prompt later leaves the others unchanged.
    """
    table = {}
    for p in prompts:
        digest = hashlib.sha256(f"{seed}:{p}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        table[p] = torch.randn((1, *shape), generator=g)
    return PromptEmbeddings(table, source=f"make_random_embeddings(seed={seed})")


# --------------------------------------------------------------------------- T5 (optional)

def _cache_file(cache_dir: Path, model_id: str, prompt: str) -> Path:
    safe_id = re.sub(r"[^A-Za-z0-9_.-]+", "--", str(model_id)).strip("-")
    key = hashlib.sha256(prompt.encode()).hexdigest()[:24]
    return cache_dir / safe_id / f"{key}.safetensors"


def encode_prompts(prompts: Iterable[str], model_id: str = DEFAULT_T5_REPO, cache_dir: str | Path | None = None,
                   device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                   local_files_only: bool = True, hub_cache_dir: str | Path | None = None) -> PromptEmbeddings:
    """Embed ``prompts`` with IF's T5-XXL encoder, as ``IFPipeline.encode_prompt`` does; cache on disk.

    The encoder and tokenizer come from ``model_id``'s ``text_encoder/`` and ``tokenizer/`` subfolders
    (a hub id already in the Hugging Face cache, or a local folder). Each prompt is cached as
    ``cache_dir/<model id>/<hash>.safetensors`` (default ``build/embeddings``) and read from there next
    time, so T5 (about 9 GB in fp16) loads only when a prompt is new.  ``local_files_only=False``
    allows a download (needs the IF licence accepted and a login; tokens come from the environment).
    ``hub_cache_dir``: the Hugging Face cache to read the weights from (default: the usual HF cache).
    Returns a ``PromptEmbeddings`` with one ``(1, 77, 4096)`` float32 tensor per prompt.
    """
    from safetensors.torch import save_file

    prompts = list(dict.fromkeys(prompts))                  # unique, in order
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"prompts must be strings, got {p!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else build_dir() / "embeddings"
    table: dict[str, torch.Tensor] = {}
    missing = []
    for p in prompts:
        f = _cache_file(cache_dir, model_id, p)
        if f.is_file():
            hint = f"delete it (or the whole cache {cache_dir}) and run again: the prompt is re-encoded with T5"
            cached = _read_safetensors(f, hint)
            if "embedding" not in cached:
                raise ValueError(f"the embeddings cache file {f} has no 'embedding' tensor; {hint}")
            table[p] = cached["embedding"]
        else:
            missing.append(p)
    if missing:
        from diffnb.core.devices import get_device
        dev = get_device(device)
        dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
        try:
            from transformers import T5EncoderModel, T5Tokenizer
            hub = {"cache_dir": str(hub_cache_dir)} if hub_cache_dir is not None else {}
            tokenizer = T5Tokenizer.from_pretrained(model_id, subfolder="tokenizer",        # as IFPipeline loads it
                                                      local_files_only=local_files_only, **hub)
            encoder = None
            variants = ["fp16", None] if dtype == torch.float16 else [None, "fp16"]   # whichever files are on disk
            for i, variant in enumerate(variants):
                try:
                    encoder = T5EncoderModel.from_pretrained(model_id, subfolder="text_encoder", dtype=dtype,
                                                             variant=variant, local_files_only=local_files_only, **hub)
                    break
                except OSError:
                    if i == len(variants) - 1:
                        raise
            encoder = encoder.to(dev).eval()
        except (OSError, ImportError, ValueError) as err:
            raise RuntimeError(
                f"cannot load the T5 text encoder of {model_id!r} ({type(err).__name__}: {str(err)[:200]}). "
                "To compute new prompt embeddings you need its text_encoder/ and tokenizer/ weights on disk: "
                "accept the licence at https://huggingface.co/DeepFloyd/IF-I-XL-v1.0, log in with "
                "`huggingface-cli login` (or set HF_TOKEN), then call encode_prompts(..., local_files_only=False) "
                "once on a machine with network access (tokenizer needs `sentencepiece`). Offline, use the "
                "prompts of the shipped embeddings file (diffnb.a.prompts.load_embeddings().prompts).") from err
        for p in missing:
            text = p.lower().strip()                        # IFPipeline._text_preprocessing, clean_caption=False
            tokens = tokenizer(text, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                               add_special_tokens=True, return_tensors="pt")
            with torch.no_grad():
                hidden = encoder(tokens.input_ids.to(dev), attention_mask=tokens.attention_mask.to(dev))[0]
            emb = hidden.float().cpu().contiguous()         # (1, 77, 4096)
            f = _cache_file(cache_dir, model_id, p)
            f.parent.mkdir(parents=True, exist_ok=True)
            save_file({"embedding": emb}, str(f), metadata={"prompt": p})
            table[p] = emb
    return PromptEmbeddings({p: table[p] for p in prompts}, source=f"T5 of {model_id} (cache {cache_dir})")
