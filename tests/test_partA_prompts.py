"""Prompt embeddings: the shipped file, both file formats, clear errors, the T5 cache."""
from __future__ import annotations

import pytest
import torch

from diffnb.a.prompts import (COURSE_PROMPTS, PromptEmbeddings, _cache_file, default_embeddings_path, encode_prompts,
                            load_embeddings, make_random_embeddings)


@pytest.fixture(scope="module")
def emb():
    return load_embeddings()


def test_shipped_file_has_the_course_prompts(emb):
    assert set(COURSE_PROMPTS) <= set(emb.prompts)
    assert "" in emb and "a high quality picture" in emb
    e = emb.get("a lithograph of a skull")
    assert e.shape == (1, 77, 4096) and e.dtype == torch.float16
    assert torch.equal(emb.uncond, emb.get(""))


def test_shipped_file_is_reproducible(emb):
    fresh = make_random_embeddings(COURSE_PROMPTS, seed=0)
    for p in COURSE_PROMPTS:
        assert torch.equal(emb.get(p), fresh.get(p).half())


def test_missing_prompt_lists_the_prompts_that_exist(emb):
    with pytest.raises(KeyError) as info:
        emb.get("a photo of a cat")
    msg = str(info.value)
    assert "'a photo of a cat'" in msg and "'a high quality picture'" in msg and "''" in msg
    with pytest.raises(ValueError):                                 # also a ValueError
        emb["a photo of a cat"]


def test_pth_and_safetensors_roundtrip(tmp_path):
    table = {"": torch.randn(1, 77, 16), "a dog": torch.randn(1, 77, 16)}
    torch.save(table, tmp_path / "course.pth")
    pth = load_embeddings(tmp_path / "course.pth")
    assert pth.prompts == ["", "a dog"] and torch.equal(pth.get("a dog"), table["a dog"])
    path = pth.save(tmp_path / "copy.safetensors", dtype=None)
    st = load_embeddings(path)
    assert torch.equal(st.get(""), table[""])


def test_bad_tables_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 77, 16\)"):
        PromptEmbeddings({"x": torch.randn(2, 77, 16)})
    with pytest.raises(FileNotFoundError, match="make-tiny"):
        load_embeddings(tmp_path / "none.safetensors")
    (tmp_path / "e.txt").write_text("x")
    with pytest.raises(ValueError, match="format"):
        load_embeddings(tmp_path / "e.txt")


def test_encode_prompts_reads_the_cache_before_t5(tmp_path):
    from safetensors.torch import save_file
    model_id = "some/IF-repo"
    value = torch.randn(1, 77, 4096)
    f = _cache_file(tmp_path, model_id, "a cached prompt")
    f.parent.mkdir(parents=True)
    save_file({"embedding": value}, str(f))
    got = encode_prompts(["a cached prompt"], model_id=model_id, cache_dir=tmp_path)   # T5 never loads
    assert torch.equal(got.get("a cached prompt"), value)


def test_encode_prompts_without_weights_is_one_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="huggingface-cli login"):
        encode_prompts(["a new prompt"], model_id=str(tmp_path / "no-model"), cache_dir=tmp_path / "cache",
                       device="cpu")


def test_default_path():
    assert default_embeddings_path("tiny").name == "tiny-if.safetensors"


def test_every_write_up_prompt_of_the_profiles_has_a_tiny_embedding(emb):
    """A notebook run with ``-p model tiny`` (the write-up's prompts on the tiny model) finds every prompt."""
    from diffnb import profiles

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, (list, tuple)):
            for x in v:
                yield from strings(x)
    prompts = profiles.part_a_settings("quick", model="tiny")["prompts"]
    missing = sorted({p for v in prompts.values() for p in strings(v)} - set(emb.prompts))
    assert not missing, f"add {missing} to COURSE_PROMPTS and run python -m diffnb.a.models make-tiny"
