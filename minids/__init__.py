"""minids: the DeepSeek LLM architecture (7B and 67B, arXiv 2401.02954), one readable idea per module,
listed in the order of the course.

Architecture
    config.py      ModelConfig and the presets (Table 2)
    norm.py        RMSNorm
    rope.py        rotary position embeddings (rotate-half layout)
    attention.py   grouped-query attention, explicit and fused paths
    mla.py         multi-head latent attention (DeepSeek-V2/V3): decompressed and absorbed paths; yarn.py: YaRN
    ffn.py         SwiGLU feed-forward network
    moe.py         DeepSeekMoE: routed + shared experts, the balance loss, V3's bias balancing
    layer.py       one pre-norm decoder layer
    model.py       DeepSeekLM, the whole model
    accounting.py  parameters, KV-cache bytes and FLOPs from the config
Inference
    kv_cache.py    the preallocated KV cache for decoding
    rolling_cache.py  the rolling-buffer cache of sliding-window models (slot = position mod W)
    latent_cache.py  MLA's cache: the latent c_KV and the shared RoPE key only
    generate.py    generation with the KV cache: greedy, temperature, top-k, top-p, streaming
    static_cache.py  a fixed-shape decode step for CUDA graphs / torch.compile
    hf.py          Llama-format (Hugging Face) checkpoints in and out
    tokenizer.py   byte-level BPE through Hugging Face tokenizers
Training
    schedule.py    warm-up + the paper's multi-step learning-rate schedule (and cosine)
    train.py       the training loop with the paper's recipe; checkpoint.py: atomic, resumable
    finetune.py    full fine-tuning: freeze parts, a lower learning rate; lora.py: LoRA through peft
    data/          the byte tokenizer, the corpora, the k-hop tasks
    pipeline/      cost model, partitioning and torch.distributed.pipelining stages
Analysis
    shapes.py      parameter-matched deep-vs-wide model families
    scaling.py     the paper's scaling laws (Eq. 1, 2, 4; Tables 2-4)
    receptive_field.py  the exact reach L (W - 1) of a windowed stack, measured by perturbation
    ngram.py       the byte n-gram baseline
    mfu.py, fast.py  MFU and the roofline; compiled / fused fast paths
    experiments/   runnable studies whose results the labs plot
Tooling for the course
    source.py      show_source and say: the chapters print the real code they teach
    diagram.py     you_are_here: the decoder stack with the chapter's piece highlighted
    exercises/     the exercises' checkers;  plots/: the chapters' figures;  course.py: the course map
    paths.py, results.py, compare.py  the project's files, committed results, relative errors
"""

from .accounting import ParamCount, count_params, kv_cache_bytes, matmul_flops_per_token, paper_M, six_n
from .attention import GroupedQueryAttention
from .config import ModelConfig
from .ffn import SwiGLU, swiglu_hidden_size
from .generate import generate, generate_text, stream_generate, stream_text
from .hf import CheckpointError
from .kv_cache import KVCache
from .latent_cache import LatentKVCache
from .mla import MultiHeadLatentAttention
from .rolling_cache import RollingKVCache
from .layer import DecoderLayer
from .model import DeepSeekLM
from .moe import DeepSeekMoE
from .norm import RMSNorm
from . import scaling
from .rope import (
    RotaryEmbedding,
    apply_rope,
    apply_rope_interleaved,
    interleaved_to_rotate_half,
    rope_cos_sin,
    rope_inv_freq,
    rotate_half,
)
from .schedule import cosine_lr, multistep_lr
from .shapes import Shape, param_matched_family
from .source import say, show_source
from .train import TrainConfig  # minids.train (the module) holds train()

__version__ = "0.1.0"

__all__ = [
    "ModelConfig", "DeepSeekLM", "RMSNorm", "GroupedQueryAttention", "SwiGLU", "DeepSeekMoE", "DecoderLayer", "KVCache",
    "RollingKVCache", "MultiHeadLatentAttention", "LatentKVCache",
    "count_params", "kv_cache_bytes", "ParamCount", "six_n", "paper_M", "matmul_flops_per_token",
    "swiglu_hidden_size", "CheckpointError", "show_source", "say",
    "RotaryEmbedding", "apply_rope", "apply_rope_interleaved", "interleaved_to_rotate_half", "rope_cos_sin",
    "rope_inv_freq", "rotate_half",
    "generate", "stream_generate", "generate_text", "stream_text", "TrainConfig", "multistep_lr", "cosine_lr", "Shape",
    "param_matched_family", "scaling",
]
