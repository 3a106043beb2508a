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
        shapes = _checked_shard_shapes(source, shards)
        tensors = lambda: _shard_tensors(shards)  # noqa: E731
    elif isinstance(source, (str, os.PathLike)):
        what = "is a file, not a folder" if os.path.exists(source) else "does not exist: no such folder"
        raise FileNotFoundError(f"DeepSeekLM.from_hf: {os.fspath(source)} {what} (expected a folder with "
                                "config.json and *.safetensors shards)")
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
    from .files import read_json

    cfg = read_json(os.path.join(folder, "config.json"), expect=dict, what="model config.json")
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"  # transformers 5 writes "dtype"
    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"config.json names dtype {name!r}, which is not a torch dtype")
    return dtype


INDEX = "model.safetensors.index.json"  # transformers' map from each weight's name to the shard holding it


def _shard_files(folder) -> list[str]:
    """The index's shards when the folder has model.safetensors.index.json (as transformers reads it), else
    every *.safetensors file."""
    if os.path.isfile(os.path.join(folder, INDEX)):
        files = sorted({os.path.join(folder, f) for f in _index_map(folder).values()})
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            raise FileNotFoundError(f"{os.path.join(folder, INDEX)} names shards that are not there: {absent[:3]}")
        return files
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        files = sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors (or pytorch_model*.bin) weight files in {folder}")
    return files


def _index_map(folder) -> dict[str, str]:
    from .files import DamagedFileError, read_json

    path = os.path.join(folder, INDEX)
    weight_map = read_json(path, expect=dict, what="safetensors index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise DamagedFileError(f"{path} has no weight_map of tensor name -> shard file name")
    return weight_map


# safetensors' names of the floating dtypes; a weight stored as anything else (I32, I64, BOOL) is not a weight.
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _checked_shard_shapes(folder, files: list[str]) -> dict[str, tuple]:
    """Every tensor's shape, refusing what transformers would load wrongly or silently: a tensor stored in two
    files (which copy wins depends on file order), a shard that disagrees with the index, a weight stored as
    integers (copying it into a float parameter would cast it silently)."""
    where: dict[str, str] = {}
    shapes: dict[str, tuple] = {}
    for path in files:
        if not path.endswith(".safetensors"):
            shapes.update(_shard_shapes([path]))
            continue
        from .files import open_safetensors

        with open_safetensors(path) as f:
            for key in f.keys():
                if key in where:
                    raise CheckpointError(f"tensor {key} is stored twice, in {where[key]} and in {path}; remove the "
                                          "stray file (or write a model.safetensors.index.json naming the right one)")
                where[key] = path
                piece = f.get_slice(key)
                if piece.get_dtype() not in _FLOAT_DTYPES and not _IGNORED.search(key):
                    raise CheckpointError(f"tensor {key} in {path} is stored as {piece.get_dtype()}, not a floating "
                                          "dtype: a weight would be cast from integers silently; the file is not a "
                                          "model checkpoint, or a wrong tensor was saved under this name")
                shapes[key] = tuple(piece.get_shape())
    if os.path.isfile(os.path.join(folder, INDEX)):
        index = {k: os.path.join(folder, v) for k, v in _index_map(folder).items()}
        wrong = sorted(k for k in set(index) | set(where) if index.get(k) != where.get(k))
        if wrong:
            k = wrong[0]
            raise CheckpointError(f"{os.path.join(folder, INDEX)} does not match its shards for {len(wrong)} tensors, "
                                  f"e.g. {k}: the index says {index.get(k)}, the shards hold it in {where.get(k)}")
    return shapes


def _shard_shapes(files: list[str]) -> Iterator[tuple[str, tuple]]:
    for path in files:
        if path.endswith(".safetensors"):
            from .files import open_safetensors

            with open_safetensors(path) as f:
                for key in f.keys():  # reads the header only
                    yield key, tuple(f.get_slice(key).get_shape())
        else:
            for key, t in torch.load(path, map_location="cpu", mmap=True, weights_only=True).items():
                yield key, tuple(t.shape)


def _shard_tensors(files: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """One tensor at a time, so only one tensor besides the model is ever in memory."""
    for path in files:
        if path.endswith(".safetensors"):
            from .files import open_safetensors

            with open_safetensors(path) as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        else:
            yield from torch.load(path, map_location="cpu", mmap=True, weights_only=True).items()


# ---- writing a folder that transformers loads --------------------------------------------------------


# What a Hugging Face model folder holds: save_hf replaces a folder only if it holds nothing else.
MODEL_FOLDER_FILES = {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
                      "tokenizer_config.json", "special_tokens_map.json"}


def save_hf(model: nn.Module, folder, tokenizer=None, dtype: torch.dtype | str | None = None,
            overwrite: bool = False):
    """Write `model` (and a minids Tokenizer) as a Hugging Face model folder, atomically.

    folder/config.json          LlamaForCausalLM's config (ModelConfig.to_hf_dict), with dtype and bos/eos ids
    folder/model.safetensors    the weights under checkpoint names (to_hf_state_dict), in `dtype` if given
    folder/tokenizer.json       with tokenizer_config.json and special_tokens_map.json, so that
                                AutoTokenizer gives transformers' fast tokenizer over the same file

    Everything is written into a temporary folder beside `folder`, which then takes its place by rename: a
    crash leaves the old folder (or none), never half of a new one. Returns the folder's Path.

    An existing `folder` is replaced only if it is a model folder (config.json, *.safetensors, the tokenizer
    files, nothing else) or empty; a folder of other files, or a regular file, is refused (FileExistsError
    saying what is there) unless overwrite=True. transformers' save_pretrained never deletes the user's files
    either. `tokenizer` is a minids Tokenizer or the path of a tokenizer.json (or of its folder); `dtype` a
    torch floating dtype or its name ("bfloat16").
    """
    from pathlib import Path

    from safetensors.torch import save_file

    from .results import atomic_folder, folder_of

    folder = Path(folder)
    config = model.config
    tokenizer, dtype = _tokenizer_arg(tokenizer), _dtype_arg(dtype)
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"save_hf: the tokenizer has {tokenizer.vocab_size:,} tokens but the model's vocab_size is "
                         f"{config.vocab_size:,}; ids past the embedding would have no row")
    recognise = folder_of(MODEL_FOLDER_FILES, (".safetensors",), ("config.json",))
    with atomic_folder(folder, "model folder", recognise, overwrite, "save_hf") as tmp:
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


def _tokenizer_arg(tokenizer):
    """save_hf's tokenizer: None, a minids Tokenizer, or the path of a tokenizer.json (or of its folder)."""
    from .tokenizer import Tokenizer

    if tokenizer is None or isinstance(tokenizer, Tokenizer):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        return Tokenizer.from_dir(tokenizer) if os.path.isdir(tokenizer) else Tokenizer.from_file(tokenizer)
    raise TypeError(f"save_hf: tokenizer must be None, a minids Tokenizer or the path of a tokenizer.json, "
                    f"got {type(tokenizer).__name__}")


def _dtype_arg(dtype):
    """save_hf's dtype: None (keep the weights' own), a torch floating dtype, or its name ("bfloat16")."""
    if isinstance(dtype, str):
        named = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(named, torch.dtype):
            raise ValueError(f"save_hf: dtype {dtype!r} is not a torch dtype; use e.g. 'float32' or 'bfloat16'")
        dtype = named
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"save_hf: dtype must be None or a floating torch dtype (torch.bfloat16, 'float16', ...), "
                         f"got {dtype!r}")
    return dtype
