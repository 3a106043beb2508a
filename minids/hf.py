"""Loading Llama-format checkpoints (DeepSeek LLM's format) and giving weights back in that format.

DeepSeek LLM checkpoints run in transformers' `LlamaForCausalLM`. Their weight names are minids' names with
a "model." prefix, except the lm_head:

| checkpoint name                                   | minids name                               |
|---------------------------------------------------|-------------------------------------------|
| model.embed_tokens.weight                         | embed_tokens.weight                       |
| model.layers.{i}.input_layernorm.weight           | layers.{i}.input_layernorm.weight         |
| model.layers.{i}.self_attn.{q,k,v,o}_proj.weight  | layers.{i}.self_attn.{q,k,v,o}_proj.weight|
| model.layers.{i}.post_attention_layernorm.weight  | layers.{i}.post_attention_layernorm.weight|
| model.layers.{i}.mlp.{gate,up,down}_proj.weight   | layers.{i}.mlp.{gate,up,down}_proj.weight |
| model.norm.weight                                 | norm.weight                               |
| lm_head.weight                                    | lm_head.weight                            |

No tensor is transposed or permuted: q_proj and k_proj are already in the rotate-half RoPE layout that
minids uses (see rope.py). A folder is read shard by shard and tensor by tensor into weights allocated
once on the target device, so peak memory stays near one copy of the model.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Iterator

import torch
from torch import nn

from .config import ModelConfig

# Buffers some older checkpoints saved; they are recomputed from the config, so they are skipped.
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


class CheckpointError(ValueError):
    """The checkpoint's weights do not match the model: lists every missing, unexpected or mis-shaped name."""


def hf_name(minids_name: str) -> str:
    return minids_name if minids_name.startswith("lm_head.") else "model." + minids_name


def minids_name(hf_key: str) -> str:
    return hf_key[len("model."):] if hf_key.startswith("model.") else hf_key


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {hf_name(name): tensor for name, tensor in model.state_dict().items()}


def load_hf(cls, source, device="cpu", dtype: torch.dtype | None = None):
    """Build `cls` (DeepSeekLM) from a transformers model or a checkpoint folder; see DeepSeekLM.from_hf."""
    if isinstance(source, nn.Module):
        if not hasattr(source, "config"):
            raise TypeError("DeepSeekLM.from_hf: the module has no .config; pass a transformers LlamaForCausalLM")
        config = ModelConfig.from_hf(source.config)
        state = unfuse_experts(source.state_dict())
        dtype = dtype or next(iter(state.values())).dtype
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        tensors = lambda: iter(state.items())  # noqa: E731
    elif isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        config = ModelConfig.from_hf(source)
        dtype = dtype or _checkpoint_dtype(source)
        shards = _shard_files(source)
        shapes = dict(_shard_shapes(shards))
        tensors = lambda: _shard_tensors(shards)  # noqa: E731
    else:
        raise TypeError(
            "DeepSeekLM.from_hf takes a transformers LlamaForCausalLM or a folder with config.json and "
            f"*.safetensors shards; got {source!r}"
        )
    if config.hf_model_type == "deepseek_v3":  # V3's multi-token-prediction layer(s), skipped as transformers does
        shapes, tensors = _without_mtp(config, shapes, tensors)
    model = cls(config, device="meta", dtype=dtype)
    _check_names_and_shapes(model, shapes)
    model.materialize(device, init=False)  # allocated once, then filled tensor by tensor
    params = model.state_dict(keep_vars=True)  # parameters and saved buffers (V3's e_score_correction_bias)
    with torch.no_grad():
        for key, tensor in tensors():
            if not _IGNORED.search(key):
                params[minids_name(key)].copy_(tensor)
    return model


def unfuse_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 keeps the experts of an MoE layer fused in memory, `mlp.experts.gate_up_proj` (E, 2f, d) =
    [gate; up] and `mlp.experts.down_proj` (E, d, f), and writes them to disk one module per expert (the
    checkpoints' own names, minids' names): split a fused in-memory state dict into those names."""
    out = {}
    for key, value in state.items():
        if key.endswith("mlp.experts.gate_up_proj"):
            prefix = key[: -len("gate_up_proj")]
            for j, w in enumerate(value):
                out[f"{prefix}{j}.gate_proj.weight"], out[f"{prefix}{j}.up_proj.weight"] = w.chunk(2, dim=0)
        elif key.endswith("mlp.experts.down_proj"):
            prefix = key[: -len("down_proj")]
            for j, w in enumerate(value):
                out[f"{prefix}{j}.down_proj.weight"] = w
        else:
            out[key] = value
    return out


def _without_mtp(config: ModelConfig, shapes: dict, tensors):
    """Drop `model.layers.{i}.*` for i >= n_layers: DeepSeek-V3's published checkpoint stores its multi-token-
    prediction module as layer 61, which predicts a second token ahead for speculative decoding and is not part
    of the next-token model (transformers' DeepseekV3 ignores `model.layers.61.*` on loading, as minids does)."""
    def extra(key: str) -> bool:
        m = re.match(r"model\.layers\.(\d+)\.", key)
        return m is not None and int(m.group(1)) >= config.n_layers
    return {k: v for k, v in shapes.items() if not extra(k)}, lambda: ((k, t) for k, t in tensors() if not extra(k))


def _check_names_and_shapes(model: nn.Module, shapes: dict[str, tuple]) -> None:
    expected = {hf_name(n): tuple(p.shape) for n, p in model.state_dict().items()}  # V3's router bias is a buffer
    found = {k: s for k, s in shapes.items() if not _IGNORED.search(k)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [f"{k}: checkpoint {found[k]}, model {expected[k]}" for k in sorted(set(found) & set(expected))
                 if found[k] != expected[k]]
    problems = []
    for title, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if names:
            shown = names[:20] + ([f"... and {len(names) - 20} more"] if len(names) > 20 else [])
            problems.append(f"{len(names)} {title}: " + "; ".join(shown))
    if problems:
        raise CheckpointError("checkpoint does not match the model config: " + " | ".join(problems))


def _checkpoint_dtype(folder) -> torch.dtype:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"  # transformers 5 writes "dtype"
    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"config.json names dtype {name!r}, which is not a torch dtype")
    return dtype


def _shard_files(folder) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        files = sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors (or pytorch_model*.bin) weight files in {folder}")
    return files


def _shard_shapes(files: list[str]) -> Iterator[tuple[str, tuple]]:
    for path in files:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                for key in f.keys():  # reads the header only
                    yield key, tuple(f.get_slice(key).get_shape())
        else:
            for key, t in torch.load(path, map_location="cpu", mmap=True, weights_only=True).items():
                yield key, tuple(t.shape)


def _shard_tensors(files: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """One tensor at a time, so only one tensor besides the model is ever in memory."""
    for path in files:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        else:
            yield from torch.load(path, map_location="cpu", mmap=True, weights_only=True).items()


# ---- writing a folder that transformers loads --------------------------------------------------------


def save_hf(model: nn.Module, folder, tokenizer=None, dtype: torch.dtype | None = None):
    """Write `model` (and a minids Tokenizer) as a Hugging Face model folder, atomically.

    folder/config.json          LlamaForCausalLM's config (ModelConfig.to_hf_dict), with dtype and bos/eos ids
    folder/model.safetensors    the weights under checkpoint names (to_hf_state_dict), in `dtype` if given
    folder/tokenizer.json       with tokenizer_config.json and special_tokens_map.json, so that
                                AutoTokenizer gives transformers' fast tokenizer over the same file

    Everything is written into a temporary folder beside `folder`, which then takes its place by rename: a
    crash leaves the old folder (or none), never half of a new one. Returns the folder's Path.
    """
    from pathlib import Path

    from safetensors.torch import save_file

    from .results import atomic_folder

    folder = Path(folder)
    config = model.config
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"save_hf: the tokenizer has {tokenizer.vocab_size:,} tokens but the model's vocab_size is "
                         f"{config.vocab_size:,}; ids past the embedding would have no row")
    with atomic_folder(folder) as tmp:
        state = {k: (v.detach().to(dtype) if dtype else v.detach()).contiguous().cpu()
                 for k, v in to_hf_state_dict(model).items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        hf = config.to_hf_dict()
        hf["dtype"] = str(next(iter(state.values())).dtype).replace("torch.", "")
        if tokenizer is not None:
            hf["bos_token_id"], hf["eos_token_id"] = tokenizer.bos_id, tokenizer.eos_id
            tokenizer.save(tmp / "tokenizer.json")
            names = {"bos_token": tokenizer.backend.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else None,
                     "eos_token": tokenizer.backend.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else None}
            names = {k: v for k, v in names.items() if v is not None}
            (tmp / "special_tokens_map.json").write_text(json.dumps(names, indent=1, ensure_ascii=False))
            (tmp / "tokenizer_config.json").write_text(json.dumps({
                "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_seq_len,
                "clean_up_tokenization_spaces": False, **names}, indent=1, ensure_ascii=False))
        (tmp / "config.json").write_text(json.dumps(hf, indent=1))
    return folder
