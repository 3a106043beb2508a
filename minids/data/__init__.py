"""Data the project makes itself, nothing downloaded (see data/README.md).

    tokenizer.py  ByteTokenizer: UTF-8 bytes, vocab 256
    corpus.py     the Python standard library's docstrings as a small English corpus; lm_batches
    synthetic.py  KHopTask: variable-binding chains with k = 1..6 dependent look-ups
    hop.py        HopKTask: hop_k, k-hop induction heads (Sanford, Hsu and Telgarsky 2024), k = 0..16
    recall.py     RecallTask: recall_d, name the one value seen d positions back (the reach of a window stack)
    pretrain.py   a 59 MB pre-training corpus of Python source (stdlib, torch, numpy, matplotlib), committed as xz
    downstream.py fine-tuning tasks: hop_k in the tokenizer's vocabulary, naming a function from its masked source
"""

from .corpus import build_corpus, corpus_manifest, corpus_text, corpus_tokens, lm_batches, lm_eval_windows
from .hop import HopKTask, hop_reference
from .recall import RecallTask
from .pretrain import build_pretrain_corpus, pretrain_manifest, pretrain_text
from .synthetic import KHopTask
from .tokenizer import ByteTokenizer

__all__ = [
    "ByteTokenizer", "corpus_tokens", "corpus_text", "corpus_manifest", "build_corpus", "lm_batches",
    "lm_eval_windows", "KHopTask", "HopKTask", "hop_reference", "RecallTask",
    "build_pretrain_corpus", "pretrain_manifest", "pretrain_text",
]
