"""LoRA on a DeepSeekLM through peft, and adapters that transformers' Llama twin applies as they are.

LoRA (Hu et al. 2021, arXiv 2106.09685) freezes a Linear's weight W0 (d_out x d_in) and trains a low-rank
change beside it:

    h = W0 x + (alpha / r) B A x        A: (r, d_in), B: (d_out, r), r << d_in, d_out

B starts at zero, so the model starts exactly as pre-trained; only A and B train, r (d_in + d_out) numbers
per matrix instead of d_in d_out, and after training B A can be added into W0 (`merge`), so inference costs
nothing extra. minids does not re-implement this: peft (the library practitioners use) wraps the chosen
projections of a plain DeepSeekLM, because minids' module names are Llama's.

    apply_lora(model, r, alpha, targets)   a peft model; targets "attn" (q, k, v, o), "mlp" (gate, up, down),
                                           "all" (the seven), or a list of projection names; never lm_head
    lora_param_count(config, r, targets)   trainable parameters from the config alone (the 7B, the 67B)
    trainable_params(model)                what the optimizer trains
    merge(peft_model)                      B A added into W0: a plain DeepSeekLM again
    save_adapter(peft_model, folder)       peft's adapter format under transformers' Llama names
    load_adapter(model, folder)            back onto a DeepSeekLM (from minids or from a Llama)

Why the renaming: peft saves a key as "base_model.model." + the module's name inside the model it wrapped.
In minids that is "layers.0.self_attn.q_proj", in LlamaForCausalLM "model.layers.0.self_attn.q_proj" (the
decoder sits under .model there, see hf.py), so a plain peft save from minids loads onto a Llama as nothing
at all. `save_adapter` writes the Llama form, "base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight",
which `peft.PeftModel.from_pretrained(<LlamaForCausalLM>, folder)` applies unchanged; `load_adapter` reads
both forms. peft's task_type stays unset: "CAUSAL_LM" would ask the model for transformers' generation hooks.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable

from torch import nn

from .config import ModelConfig
from .finetune import trainable_params
from .hf import hf_name, minids_name

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TARGETS = {"attn": ATTENTION, "mlp": MLP, "all": ATTENTION + MLP}
PREFIX = "base_model.model."  # what peft puts before the wrapped model's own parameter names
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
# What peft records for an adapter made on a LlamaForCausalLM with task_type unset (its AutoPeftModel reads it).
LLAMA_AUTO_MAPPING = {"base_model_class": "LlamaForCausalLM",
                      "parent_library": "transformers.models.llama.modeling_llama"}

__all__ = ["apply_lora", "lora_param_count", "trainable_params", "merge", "save_adapter", "load_adapter",
           "resolve_targets", "TARGETS"]


def _peft():
    try:
        import peft
    except ImportError as exc:
        raise ImportError("minids.lora needs the peft library: pip install peft (requirements.txt pins the "
                          "tested version)") from exc
    return peft


def resolve_targets(targets: str | Iterable[str]) -> tuple[str, ...]:
    """The projection names for "attn", "mlp", "all" or an explicit list of them (checked)."""
    if isinstance(targets, str):
        if targets not in TARGETS:
            raise ValueError(f"unknown LoRA target {targets!r}: use one of {', '.join(TARGETS)} or a list of "
                             f"projection names from {', '.join(TARGETS['all'])}")
        return TARGETS[targets]
    names = tuple(targets)
    if not names:
        raise ValueError("LoRA targets: the list is empty; name at least one projection")
    if "lm_head" in names:
        raise ValueError("LoRA targets: minids never wraps lm_head (it scores every token of the vocabulary, so "
                         "an adapter there shifts the whole output distribution, and it is not one of a layer's "
                         f"projections); choose from {', '.join(TARGETS['all'])}")
    bad = [n for n in names if n not in TARGETS["all"]]
    if bad:
        raise ValueError(f"unknown LoRA target(s) {bad}: the projections are {', '.join(TARGETS['all'])}")
    if len(set(names)) != len(names):
        raise ValueError(f"LoRA targets name a projection twice: {list(names)}")
    return tuple(n for n in TARGETS["all"] if n in names)  # the canonical order


def _check_rank(r, alpha) -> float:
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
    alpha = 2 * r if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"LoRA alpha must be a positive number (the update is scaled by alpha / r), got {alpha!r}")
    return alpha


def lora_param_count(config: ModelConfig, r: int, targets: str | Iterable[str] = "all") -> int:
    """Trainable parameters of LoRA at rank r on the chosen projections of every layer, without a model:
    r (d_in + d_out) per matrix (A is r x d_in, B is d_out x r)."""
    _check_rank(r, None)
    d, kv, ff = config.d_model, config.n_kv_heads * config.head_dim, config.d_ff
    shapes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
              "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}
    return config.n_layers * sum(r * sum(shapes[name]) for name in resolve_targets(targets))


def apply_lora(model: nn.Module, r: int = 8, alpha: float | None = None, targets: str | Iterable[str] = "attn",
               dropout: float = 0.0):
    """Wrap the chosen projections of a DeepSeekLM with LoRA adapters (peft); returns the peft model.

    alpha None means 2r (alpha 16 at r = 8, a common choice). peft freezes every base weight, wraps the
    model IN PLACE (`model`'s projections become peft LoRA layers) and initialises A like a Linear and B to
    zero, so the output is unchanged until training moves B. The peft model is called like the DeepSeekLM.

    A DeepSeekLM that already carries adapters (apply_lora ran on it before: a notebook cell run twice) is
    refused: wrapping it again would start new adapters over the trained ones. peft's get_peft_model sees the
    same case and only warns ("modify a model with PEFT for a second time"); minids refuses, since the trained
    A and B would be lost.
    """
    from .model import DeepSeekLM

    peft = _peft()
    if isinstance(model, peft.PeftModel):
        raise TypeError("apply_lora: the model already carries adapters; merge(peft_model) first, or train these")
    if not isinstance(model, DeepSeekLM):
        raise TypeError(f"apply_lora takes a DeepSeekLM, got {type(model).__name__}")
    _refuse_second_adapter(model, "apply_lora")
    alpha = _check_rank(r, alpha)
    if not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must lie in [0, 1), got {dropout!r}")
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(resolve_targets(targets)),
                             lora_dropout=dropout, bias="none")
    return peft.get_peft_model(model, config)


def _refuse_second_adapter(model: nn.Module, caller: str) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if wrapped:
        raise ValueError(f"{caller}: this DeepSeekLM already carries LoRA adapters ({len(wrapped)} wrapped "
                         f"projections, e.g. {wrapped[0]}) from an earlier apply_lora or load_adapter; keep "
                         "training the peft model it returned, merge(peft_model) first, or start from a fresh "
                         "model. Wrapping again would replace the trained adapters.")


def _lora_config(peft_model):
    peft = _peft()
    if not isinstance(peft_model, peft.PeftModel):
        raise TypeError(f"expected a peft model from apply_lora or load_adapter, got {type(peft_model).__name__}")
    if list(peft_model.peft_config) != ["default"]:
        raise ValueError(f"minids handles one adapter per model (peft's 'default'); this one has "
                         f"{list(peft_model.peft_config)}")
    config = peft_model.peft_config["default"]
    if config.peft_type != peft.PeftType.LORA:
        raise ValueError(f"not a LoRA adapter: peft_type {config.peft_type}")
    return config


def merge(peft_model) -> nn.Module:
    """Add (alpha / r) B A into every wrapped W0 and drop the adapters: the plain DeepSeekLM, same outputs.
    Works in place: the peft model's base model is the one returned."""
    from .model import DeepSeekLM

    _lora_config(peft_model)
    model = peft_model.merge_and_unload()
    if not isinstance(model, DeepSeekLM):
        raise TypeError(f"merge: the adapters sat on a {type(model).__name__}, not a DeepSeekLM")
    return model


def to_llama_key(key: str) -> str:
    """A peft key of a minids model -> the same weight's key in an adapter of LlamaForCausalLM."""
    if not key.startswith(PREFIX):
        raise ValueError(f"not a peft adapter key (no {PREFIX!r} prefix): {key!r}")
    return PREFIX + hf_name(key[len(PREFIX):])


def from_llama_key(key: str) -> str:
    """An adapter key of LlamaForCausalLM (or already of minids) -> the key peft expects on a DeepSeekLM."""
    if not key.startswith(PREFIX):
        raise ValueError(f"not a peft adapter key (no {PREFIX!r} prefix): {key!r}")
    return PREFIX + minids_name(key[len(PREFIX):])


def save_adapter(peft_model, folder: str | os.PathLike, base_model_name_or_path: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write the adapter (A and B only, not the base weights) as peft writes one for a LlamaForCausalLM.

    folder/adapter_config.json         peft's LoraConfig (target names are Llama's: q_proj ... down_proj)
    folder/adapter_model.safetensors   "base_model.model.model.layers.{i}.<module>.lora_{A,B}.weight"

    Atomic (a temporary folder renamed into place). base_model_name_or_path is recorded for peft's
    AutoPeftModel (for example the folder that DeepSeekLM.save_hf wrote). Returns the folder's Path.

    An existing `folder` is replaced only if it is an adapter folder (adapter_config.json with the adapter's
    weights and peft's README.md, nothing else) or empty: a model folder (save_hf's), any other folder or a
    regular file is refused (FileExistsError) unless overwrite=True. peft's save_pretrained never deletes
    what it did not write either; minids replaces the folder whole, so it must know the folder is its own.
    """
    from safetensors.torch import save_file

    from .results import atomic_folder, folder_of

    peft = _peft()
    config = copy.deepcopy(_lora_config(peft_model))
    if isinstance(config.target_modules, str):
        raise ValueError("save_adapter: the adapter's target_modules is a regular expression over minids' module "
                         "names, which would not match Llama's; make it with apply_lora (a list of projections)")
    state = peft.get_peft_model_state_dict(peft_model)
    tensors = {to_llama_key(k): v.detach().to("cpu").contiguous() for k, v in state.items()}
    config.inference_mode = True
    config.task_type = None
    config.base_model_name_or_path = base_model_name_or_path
    recognise = folder_of({ADAPTER_CONFIG, ADAPTER_WEIGHTS, "adapter_model.bin", "README.md"}, (), (ADAPTER_CONFIG,))
    with atomic_folder(folder, "LoRA adapter folder", recognise, overwrite, "save_adapter") as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        config.save_pretrained(str(tmp), auto_mapping_dict=LLAMA_AUTO_MAPPING)
    return Path(folder)


def load_adapter(model: nn.Module, folder: str | os.PathLike, trainable: bool = False):
    """Apply a saved LoRA adapter (save_adapter's, or one peft saved from a LlamaForCausalLM) to a DeepSeekLM.

    Returns the peft model (wrapping `model` in place). Every A and B in the file must find its module and
    every wrapped module must get its A and B, with matching shapes; otherwise nothing is half-applied
    silently, the error lists what did not match. trainable=True leaves A and B trainable (to go on training).
    """
    from .files import load_safetensors, read_json
    from .model import DeepSeekLM

    peft = _peft()
    folder = Path(folder)
    if not isinstance(model, DeepSeekLM):
        raise TypeError(f"load_adapter takes a DeepSeekLM, got {type(model).__name__}")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"load_adapter: {folder} has no {name} (expected a peft LoRA adapter folder)")
    _refuse_second_adapter(model, "load_adapter")
    peft_type = read_json(folder / ADAPTER_CONFIG, expect=dict, what="peft adapter_config.json").get("peft_type")
    if peft_type != "LORA":
        raise ValueError(f"load_adapter: {folder} holds a {peft_type} adapter; minids loads LoRA adapters")
    config = peft.LoraConfig.from_pretrained(str(folder))
    config.inference_mode = not trainable
    config.task_type = None  # a Llama adapter saved as CAUSAL_LM applies to the same modules here
    state = {from_llama_key(k): v for k, v in load_safetensors(folder / ADAPTER_WEIGHTS).items()}
    peft_model = peft.get_peft_model(model, config)
    expected = {k: tuple(v.shape) for k, v in peft.get_peft_model_state_dict(peft_model).items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k}: file {tuple(state[k].shape)}, model {expected[k]}" for k in sorted(set(state) & set(expected))
                 if tuple(state[k].shape) != expected[k]]
    if missing or unexpected or misshaped:
        peft_model.unload()  # take the empty adapters off again: the caller's model is as it was
        raise ValueError(f"load_adapter: {folder} does not fit this model: {len(missing)} missing "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, mis-shaped {misshaped[:3]}")
    peft.set_peft_model_state_dict(peft_model, state)
    return peft_model
