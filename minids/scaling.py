"""The scaling laws of DeepSeek LLM (paper section 3): what a compute budget buys.

The paper's symbols:

    C      compute budget, FLOPs                      C = M * D
    M      model scale: non-embedding training FLOPs per token (Eq. 2), not parameters
    D      data scale: training tokens
    η_opt  near-optimal peak learning rate   η_opt = 0.3118 * C**-0.1250   (Eq. 1)
    B_opt  near-optimal batch size in tokens B_opt = 0.2920 * C**0.3271    (Eq. 1)
    M_opt, D_opt  the compute-optimal split   M_opt = 0.1715 * C**0.5243, D_opt = 5.8316 * C**0.4757 (Eq. 4)

Eq. 2 counts a layer as 12 * d_model**2 weights (4 d² of MHA attention + 8 d² of an FFN with d_ff = 4 d
over two matrices, or 8/3 d over three). The real 7B has 12.06 d² per layer, the GQA 67B only 10.31 d²
(its K and V projections are 8x smaller). For the 67B, Eq. 2's weight term is therefore 16% above the real one
(12 / 10.31), and M as a whole, whose attention term is the same either way, is 15% above the real M at
l_seq = 4096 (497.3 against 432.7 GFLOP per token).
`real_flops_per_token` counts M from the module's own shapes instead (through `count_params`).

Every function checks that its input is inside the laws' domain (a positive, finite budget; positive
integer shapes) and says what was wrong. Budget functions also take numpy arrays, for plotting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from .accounting import count_params, paper_M
from .config import ModelConfig

# ---- the fitted constants (paper section 3; docs/references.md#scaling-laws) ---------------------------
LR_COEFF, LR_EXP = 0.3118, -0.1250  # Eq. 1, η_opt
BATCH_COEFF, BATCH_EXP = 0.2920, 0.3271  # Eq. 1, B_opt in tokens
M_OPT_COEFF, M_OPT_EXP = 0.1715, 0.5243  # Eq. 4, current data
D_OPT_COEFF, D_OPT_EXP = 5.8316, 0.4757
# The hyperparameter laws were fitted on budgets from 1e17 to 2e19 FLOPs; the 7B and 67B sit 4-5 orders of
# magnitude above. Using them there is an extrapolation, which is exactly what the paper did (and checked).
HYPERPARAM_FIT_RANGE = (1e17, 2e19)

# Table 4: M_opt ∝ C**a and D_opt ∝ C**b for several fits (a + b = 1). Kaplan et al. fit parameters N,
# not M; the DeepSeek rows differ only by the data they were fitted on.
TABLE4_EXPONENTS: dict[str, tuple[float, float]] = {
    "OpenAI (Kaplan et al. 2020)": (0.73, 0.27),
    "Chinchilla (Hoffmann et al. 2022)": (0.49, 0.51),
    "DeepSeek, early in-house data": (0.450, 0.550),
    "DeepSeek, current data": (0.524, 0.476),
    "DeepSeek, OpenWebText2": (0.578, 0.422),
}


# ---- checks -----------------------------------------------------------------------------------------
def _compute(C, name: str = "C"):
    """C as a float (or a float array), refusing anything outside the laws' domain (C > 0, finite)."""
    if isinstance(C, bool) or not isinstance(C, (Real, np.ndarray, list, tuple)):
        raise TypeError(f"{name} (compute budget in FLOPs) must be a positive number, got {C!r}")
    arr = np.asarray(C, dtype=float)
    if arr.size == 0:
        raise ValueError(f"{name} (compute budget in FLOPs) is empty")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(
            f"{name} (compute budget in FLOPs) must be finite and > 0, got {C!r}: "
            "the power laws are fitted to positive budgets (1e17 to 2e19 FLOPs for the hyperparameters)"
        )
    return float(arr) if arr.ndim == 0 else arr


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


# ---- Eq. 1: hyperparameters from compute --------------------------------------------------------------
def optimal_lr(C):
    """η_opt = 0.3118 * C**-0.1250: the near-optimal peak learning rate for a budget of C FLOPs."""
    return LR_COEFF * _compute(C) ** LR_EXP


def optimal_batch_tokens(C):
    """B_opt = 0.2920 * C**0.3271: the near-optimal batch size, in tokens, for a budget of C FLOPs."""
    return BATCH_COEFF * _compute(C) ** BATCH_EXP


def optimal_batch_sequences(C, seq_len: int = 4096):
    """B_opt in sequences of `seq_len` tokens (Table 2 counts sequences of 4096)."""
    return optimal_batch_tokens(C) / _positive_int(seq_len, "seq_len")


# ---- Eq. 2 and Table 3: model scale per token ---------------------------------------------------------
class _Shape(NamedTuple):
    """Just the two fields `paper_M` reads, so that Eq. 2 lives in one place (accounting.py)."""

    n_layers: int
    d_model: int


def flops_per_token(n_layers: int, d_model: int, seq_len: int) -> int:
    """The paper's M (Eq. 2): 72 * n_layers * d_model**2 + 12 * n_layers * d_model * seq_len."""
    shape = _Shape(_positive_int(n_layers, "n_layers"), _positive_int(d_model, "d_model"))
    return paper_M(shape, _positive_int(seq_len, "seq_len"))


def six_n1(n_layers: int, d_model: int) -> int:
    """6 * N1, N1 = 12 * n_layers * d_model**2: non-embedding parameters, attention FLOPs ignored."""
    return 72 * _positive_int(n_layers, "n_layers") * _positive_int(d_model, "d_model") ** 2


def six_n2(n_layers: int, d_model: int, vocab: int) -> int:
    """6 * N2: N1 plus the vocabulary (output) projection, vocab * d_model."""
    return six_n1(n_layers, d_model) + 6 * _positive_int(vocab, "vocab") * d_model


# ---- Eq. 4: compute-optimal model and data scale -----------------------------------------------------
def optimal_allocation(C) -> tuple:
    """(M_opt, D_opt) = (0.1715 * C**0.5243, 5.8316 * C**0.4757): FLOPs/token and tokens for budget C.

    The exponents add up to 1 and the coefficients multiply to 1.0001, so M_opt * D_opt = C.
    """
    C = _compute(C)
    return M_OPT_COEFF * C**M_OPT_EXP, D_OPT_COEFF * C**D_OPT_EXP


def compute_where_optimal(M) -> float:
    """The budget C at which a model of scale M (FLOPs/token) is the compute-optimal one: Eq. 4 inverted."""
    M = _compute(M, name="M")
    return (M / M_OPT_COEFF) ** (1.0 / M_OPT_EXP)


# ---- the same for a real config ----------------------------------------------------------------------
def weights_per_layer(config: ModelConfig) -> int:
    """W: the matrix weights of one decoder layer (attention + FFN; the norms do no matmul)."""
    p = count_params(config)
    return (p.attention + p.active_ffn) // config.n_layers  # active: an MoE token uses k experts


def real_flops_per_token(config: ModelConfig, seq_len: int | None = None) -> int:
    """M from the module's real shapes: 6 * W * n_layers + 12 * n_layers * d_model * seq_len.

    Same definition as Eq. 2 (non-embedding, forward + backward, attention products counted without the
    causal halving), but with the real W instead of 12 * d_model**2.
    """
    seq_len = config.max_seq_len if seq_len is None else _positive_int(seq_len, "seq_len")
    L, d = config.n_layers, config.d_model
    return 6 * weights_per_layer(config) * L + 12 * L * d * seq_len


@dataclass(frozen=True)
class ModelScale:
    """A config's model scale, counted the paper's ways (all per token, training = forward + backward)."""

    name: str
    n_layers: int
    d_model: int
    seq_len: int
    weights_per_layer: int  # W, real
    M_eq2: int  # Eq. 2 (assumes W = 12 d²)
    M_real: int  # with the real W
    six_n1: int
    six_n2: int

    @property
    def d2_per_layer(self) -> float:
        """W / d_model²: 12 is what Eq. 2 assumes; the 7B has 12.06, the GQA 67B 10.31."""
        return self.weights_per_layer / self.d_model**2

    @property
    def eq2_overstates(self) -> float:
        """M_eq2 / M_real: how far Eq. 2 is from the real shapes."""
        return self.M_eq2 / self.M_real


def model_scale(config: ModelConfig, seq_len: int | None = None, name: str = "") -> ModelScale:
    """The ModelScale of a config at `seq_len` (its max_seq_len by default: 4096 for the presets)."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"model_scale needs a ModelConfig, got {type(config).__name__}")
    seq_len = config.max_seq_len if seq_len is None else _positive_int(seq_len, "seq_len")
    L, d = config.n_layers, config.d_model
    return ModelScale(
        name=name, n_layers=L, d_model=d, seq_len=seq_len, weights_per_layer=weights_per_layer(config),
        M_eq2=flops_per_token(L, d, seq_len), M_real=real_flops_per_token(config, seq_len),
        six_n1=six_n1(L, d), six_n2=six_n2(L, d, config.vocab_size),
    )


@dataclass(frozen=True)
class Recipe:
    """What the laws say for training a config on `tokens` tokens (C = M * tokens)."""

    M: float  # FLOPs per token used (Eq. 2 or real)
    tokens: float  # D
    seq_len: int
    C: float
    lr: float  # η_opt(C)
    batch_tokens: float  # B_opt(C)
    M_opt: float  # the compute-optimal M for this C
    D_opt: float  # and its tokens
    C_where_optimal: float  # the budget at which this M would be the optimal model

    @property
    def batch_sequences(self) -> float:
        return self.batch_tokens / self.seq_len

    @property
    def tokens_where_optimal(self) -> float:
        """D at the budget where this model is compute-optimal (C_where_optimal / M)."""
        return self.C_where_optimal / self.M


def training_recipe(config: ModelConfig, tokens: float, seq_len: int | None = None, scale: str = "eq2") -> Recipe:
    """η_opt, B_opt and the compute-optimal split for training `config` on `tokens` tokens.

    `scale="eq2"` counts M as the paper does (Eq. 2, which is how Table 2's values follow from the laws);
    `scale="real"` uses the module's real weights per layer.
    """
    if scale not in ("eq2", "real"):
        raise ValueError(f"scale must be 'eq2' (the paper's Eq. 2) or 'real' (the module's shapes), got {scale!r}")
    tokens = _compute(tokens, name="tokens")
    if not isinstance(tokens, float):
        raise TypeError("training_recipe takes one token count, not an array")
    s = model_scale(config, seq_len)
    M = s.M_eq2 if scale == "eq2" else s.M_real
    C = M * tokens
    M_opt, D_opt = optimal_allocation(C)
    return Recipe(
        M=float(M), tokens=tokens, seq_len=s.seq_len, C=C, lr=optimal_lr(C), batch_tokens=optimal_batch_tokens(C),
        M_opt=M_opt, D_opt=D_opt, C_where_optimal=compute_where_optimal(M),
    )


def fit_power_law(x, y) -> tuple[float, float]:
    """(coeff, exponent) of y = coeff * x**exponent by least squares in log-log space (how the paper fits)."""
    x, y = _compute(x, name="x"), _compute(y, name="y")
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"fit_power_law needs two arrays of the same length >= 2, got {x.shape} and {y.shape}")
    exponent, log_coeff = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(log_coeff)), float(exponent)
