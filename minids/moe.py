"""DeepSeekMoE: fine-grained routed experts plus always-on shared experts (arXiv 2401.06066).

A dense FFN gives every token the same d_ff-wide SwiGLU. DeepSeekMoE splits that width into many narrow
experts and lets each token use only a few of them, so the parameters grow while the FLOPs per token do not:

    h_t = u_t + sum_{i <= K_s} FFN_i(u_t) + sum_{i > K_s} g_{i,t} FFN_i(u_t)    (u_t: the normalised input)
    g_{i,t} = s_{i,t} if s_{i,t} is among the K' largest of {s_{j,t}}, else 0
    s_{i,t} = Softmax_i(u_t . e_i)                                               (e_i: row i of the router)

Fine-grained: each routed expert is a SwiGLU of width moe_d_ff (1408 in the 16B, against a dense 10944), and
each token picks K' = 6 of N' = 64. Splitting experts multiplies the ways to combine them at the same cost
(the paper's example: 16 experts, top-2, give C(16, 2) = 120 combinations; each split in 4, top-8, gives
C(64, 8) = 4,426,165,368). Shared: K_s = 2 experts see every token and learn what all tokens need, which the
routed experts then need not each relearn. The residual u_t is added by the decoder layer, not here.

Letters used in shapes: T tokens (b*t flattened), d = d_model, E = N' routed experts, k = K' experts per
token, f = moe_d_ff. Checkpoint names are deepseek-moe-16b's: `gate.weight` (E, d), `experts.{j}.{gate,up,
down}_proj.weight`, and `shared_experts.{gate,up,down}_proj.weight` (the K_s shared experts stored as ONE
SwiGLU of width K_s * f, which computes exactly their sum).

Three implementations of the routed sum, one function (tests/test_moe.py checks they agree):

    "reference"  loop over tokens and each token's k experts: the equation, read aloud; slow
    "dispatch"   sort the (token, expert) pairs by expert, one matrix product per expert over its tokens
    "grouped"    the same sorted pairs through torch's grouped GEMM (one kernel for all experts; torch >= 2.8,
                 bf16 on a CUDA GPU, or a CPU in torch >= 2.9); "auto" (default) picks it where it runs

Balance. A router left alone sends most tokens to a few experts (which then learn faster and are chosen
more: routing collapse). DeepSeekMoE adds the expert-level balance loss alpha_1 * sum_i f_i P_i (the
model keeps it after each forward; the training loop adds it to the LM loss); DeepSeek-V3 instead adds a
bias b_i to the scores only when choosing the top-k and nudges it after each step (`update_bias`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .config import ModelConfig
from .ffn import SwiGLU

MOE_IMPLS = ("auto", "reference", "dispatch", "grouped")


@dataclass
class Routing:
    """The router's decision for T tokens."""

    scores: torch.Tensor  # (T, E) float32: s_{i,t}, softmax probabilities (or V3's sigmoid affinities)
    experts: torch.Tensor  # (T, k) long: the chosen routed experts of each token
    weights: torch.Tensor  # (T, k) float32: their gates g_{i,t} (renormalised / scaled if the config says so)


def route(logits: torch.Tensor, k: int, scoring: str = "softmax", norm_topk_prob: bool = False,
          routed_scaling: float = 1.0, bias: torch.Tensor | None = None) -> Routing:
    """Scores, greedy top-k choice and gates from router logits (T, E), all in float32.

    `bias` (V3's loss-free balancing) shifts the scores for the CHOICE only; the gates stay the raw scores,
    so the bias steers load without changing what a chosen expert's output is weighted by.
    """
    logits = logits.float()
    scores = logits.softmax(dim=-1) if scoring == "softmax" else logits.sigmoid()  # (T, E)
    choice = scores if bias is None else scores + bias.float()
    experts = choice.topk(k, dim=-1).indices  # (T, k): greedy, the k highest
    weights = scores.gather(-1, experts)  # (T, k)
    if norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)  # DeepSeek's code adds the 1e-20
    return Routing(scores=scores, experts=experts, weights=weights * routed_scaling)


def tokens_per_expert(experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(E,) float32: how many (token, slot) pairs chose each expert; sums to T * k."""
    flat = experts.flatten()
    return torch.zeros(n_experts, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.float))


def balance_loss(routing: Routing, n_sequences: int = 1) -> torch.Tensor:
    """DeepSeekMoE's expert-level balance loss without alpha_1: sum_i f_i P_i (averaged over sequences).

        f_i = N' / (K' T) * #{t : token t chose expert i}    (the load, 1 for every expert when balanced)
        P_i = (1 / T) * sum_t s_{i,t}                          (the mean router probability)

    Perfect balance gives f_i = 1 and sum_i P_i = 1, so the loss is 1 (alpha_1 after scaling). Only P carries
    a gradient (the choice is a top-k), and it pulls probability away from the experts that are over-used.
    `n_sequences` > 1 computes f and P within each of that many equal runs of tokens (deepseek-moe-16b's
    `seq_aux`) and averages: balance is asked of every sequence, not only of the batch as a whole.
    Scores are normalised to sum to 1 per token, as V3's sequence-wise loss does for its sigmoid scores; for
    softmax scores that changes neither the value nor the gradient reaching the logits.
    """
    experts = routing.experts
    scores = routing.scores / routing.scores.sum(dim=-1, keepdim=True)
    E, k = scores.shape[-1], experts.shape[-1]
    s = rearrange(scores, "(n t) e -> n t e", n=n_sequences)
    chosen = rearrange(experts, "(n t) k -> n (t k)", n=n_sequences)
    t = s.shape[1]
    ones = torch.ones_like(chosen, dtype=s.dtype)
    counts = torch.zeros(n_sequences, E, device=s.device).scatter_add_(1, chosen, ones)  # picks per expert
    f = counts * E / (k * t)  # (n, E)
    P = s.mean(dim=1)  # (n, E)
    return (f * P).sum(dim=-1).mean()


def load_imbalance(load: torch.Tensor) -> torch.Tensor:
    """max / mean of tokens per expert along the last axis: 1 is perfect balance, E means one expert took all."""
    load = load.float()
    return load.amax(dim=-1) / load.mean(dim=-1).clamp_min(1e-9)


class DeepSeekMoE(nn.Module):
    """The MoE feed-forward block of one DeepSeekMoE layer: (b, t, d) -> (b, t, d).

    After each forward it keeps, for the training loop and for plots:
        aux_loss   alpha_1 * sum_i f_i P_i, a scalar with gradient (0 when aux_loss_alpha is 0)
        balance    sum_i f_i P_i itself (detached), 1 at perfect balance, whatever alpha_1 is
        load       (E,) tokens per expert in that forward (detached, float32)
    """

    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__()
        if not config.is_moe:
            raise ValueError("DeepSeekMoE needs a config with n_routed_experts > 0")
        kw = dict(device=device, dtype=dtype)
        self.n_experts, self.top_k = config.n_routed_experts, config.n_experts_per_token
        self.scoring, self.norm_topk_prob, self.routed_scaling = (
            config.router_scoring, config.norm_topk_prob, config.routed_scaling)
        self.aux_loss_alpha, self.aux_loss_per_sequence = config.aux_loss_alpha, config.aux_loss_per_sequence
        self.bias_update_speed = config.bias_update_speed
        self.gate = nn.Linear(config.d_model, self.n_experts, bias=False, **kw)  # the router: row i is e_i
        self.experts = nn.ModuleList(SwiGLU(config.d_model, config.moe_d_ff, **kw) for _ in range(self.n_experts))
        self.shared_experts = (SwiGLU(config.d_model, config.n_shared_experts * config.moe_d_ff, **kw)
                               if config.n_shared_experts else None)
        if self.bias_update_speed > 0:  # V3's selection bias: state of training, so saved with the model
            self.register_buffer("expert_bias", torch.zeros(self.n_experts, device=device, dtype=torch.float32))
        else:
            self.expert_bias = None
        self.impl = "auto"
        self.aux_loss: torch.Tensor | None = None
        self.balance: torch.Tensor | None = None
        self.load: torch.Tensor | None = None
        self._load_since_update: torch.Tensor | None = None

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, impl: str) -> None:
        if impl not in MOE_IMPLS:
            raise ValueError(f"DeepSeekMoE.impl must be one of {MOE_IMPLS}, got {impl!r}")
        self._impl = impl

    def reset_parameters(self) -> None:
        """Zero the selection bias (weights are initialised by DeepSeekLM.init_weights, like every Linear)."""
        if self.expert_bias is not None:
            with torch.no_grad():
                self.expert_bias.zero_()
        self._load_since_update = None

    # ---- forward ----------------------------------------------------------------------------------
    def route(self, u: torch.Tensor) -> Routing:
        """The router on tokens u (T, d), in float32 even under bf16 autocast: small score differences decide
        which experts a token gets, and bf16 keeps only 8 bits of them."""
        with torch.autocast(u.device.type, enabled=False):
            logits = F.linear(u.float(), self.gate.weight.float())  # (T, E)
        return route(logits, self.top_k, self.scoring, self.norm_topk_prob, self.routed_scaling, self.expert_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        b = x.shape[0]
        u = rearrange(x, "b t d -> (b t) d")
        routing = self.route(u)
        impl = self._choose_impl(u)
        routed = {"reference": self.routed_reference, "dispatch": self.routed_dispatch,
                  "grouped": self.routed_grouped}[impl](u, routing)
        y = routed if self.shared_experts is None else routed + self.shared_experts(u)  # the routed sum is float32
        y = y.to(u.dtype)
        self._record(routing, n_sequences=b if self.aux_loss_per_sequence else 1)
        return rearrange(y, "(b t) d -> b t d", b=b)

    def _check_input(self, x: torch.Tensor) -> None:
        """x must be (batch, seq, d_model) with at least one token, in the weights' dtype (or under autocast,
        which casts it): einops' and matmul's own errors would not say which of these is wrong."""
        d = self.gate.in_features
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"DeepSeekMoE takes a tensor (batch, seq, d_model={d}), got {type(x).__name__}")
        if x.ndim != 3 or x.shape[-1] != d:
            raise ValueError(f"DeepSeekMoE: input must have shape (batch, seq, d_model={d}), got {tuple(x.shape)}"
                             + (" (add the batch axis: x[None])" if x.ndim == 2 and x.shape[-1] == d else ""))
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"DeepSeekMoE: input has no tokens (shape {tuple(x.shape)}); batch and seq must be >= 1")
        weight = self.gate.weight.dtype
        if x.dtype != weight and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"DeepSeekMoE: input dtype {x.dtype} differs from the weights' {weight}; cast one to "
                            f"the other (x.to({weight}) or module.to({x.dtype})), or run under torch.autocast")

    def routed_reference(self, u: torch.Tensor, routing: Routing) -> torch.Tensor:
        """sum_i g_{i,t} FFN_i(u_t), token by token and expert by expert, as the equation reads (T, d)."""
        rows = []
        for t in range(u.shape[0]):
            h = torch.zeros(u.shape[1], device=u.device, dtype=torch.float32)
            for slot in range(self.top_k):
                i = int(routing.experts[t, slot])
                h = h + routing.weights[t, slot] * self.experts[i](u[t]).float()
            rows.append(h)
        return torch.stack(rows)

    def _sorted_by_expert(self, u: torch.Tensor, routing: Routing):
        """The T*k (token, expert) pairs sorted by expert: the tokens' rows in that order, which token each
        came from, its gate, and how many pairs each expert has (its run length in the sorted rows)."""
        pairs = rearrange(routing.experts, "T k -> (T k)")
        order = pairs.argsort(stable=True)  # pairs of expert 0 first, then expert 1, ...
        token = order // self.top_k  # (T*k,) the token each sorted pair belongs to
        gate = rearrange(routing.weights, "T k -> (T k)")[order]
        counts = tokens_per_expert(routing.experts, self.n_experts).long()  # (E,)
        return u[token], token, gate, counts

    def _combine(self, u: torch.Tensor, out: torch.Tensor, token: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Weight each pair's output by its gate and add it into its token's row (float32, (T, d))."""
        weighted = out.float() * gate[:, None]
        return torch.zeros(u.shape, device=u.device, dtype=torch.float32).index_add_(0, token, weighted)

    def routed_dispatch(self, u: torch.Tensor, routing: Routing) -> torch.Tensor:
        """The routed sum with one matrix product per expert over all the tokens that chose it (T, d).

        Reading the run lengths back to the host (`tolist`) waits for the GPU once per layer; experts that
        no token chose are skipped (they get no gradient this step, as in the reference)."""
        xs, token, gate, counts = self._sorted_by_expert(u, routing)
        outs = [self.experts[i](chunk) for i, chunk in enumerate(xs.split(counts.tolist())) if chunk.shape[0]]
        return self._combine(u, torch.cat(outs), token, gate)

    def routed_grouped(self, u: torch.Tensor, routing: Routing) -> torch.Tensor:
        """The routed sum through a grouped GEMM: every expert's product in one kernel, no host sync (T, d).

        The experts are separate modules (so their checkpoint names stay deepseek-moe-16b's), so their
        weights are stacked into (E, 2f, d) and (E, d, f) tensors on each call: one extra read and write of
        the routed weights, paid back when many tokens share the kernel (prefill, training)."""
        mm = grouped_mm_fn()
        if mm is None:
            raise RuntimeError(f"this torch ({torch.__version__}) has no grouped GEMM; use impl='dispatch'")
        xs, token, gate, counts = self._sorted_by_expert(u, routing)
        dt = _compute_dtype(u)
        ends = counts.cumsum(0).to(torch.int32)  # (E,) where each expert's run of rows ends
        w_gate_up = torch.stack([torch.cat([e.gate_proj.weight, e.up_proj.weight]) for e in self.experts])  # (E, 2f, d)
        w_down = torch.stack([e.down_proj.weight for e in self.experts])  # (E, d, f)
        h = mm(xs.to(dt), w_gate_up.to(dt).transpose(-2, -1), offs=ends)  # (T*k, 2f)
        g, up = h.chunk(2, dim=-1)
        out = mm(F.silu(g) * up, w_down.to(dt).transpose(-2, -1), offs=ends)  # (T*k, d)
        return self._combine(u, out, token, gate)

    def _choose_impl(self, u: torch.Tensor) -> str:
        if self.impl != "auto":
            return self.impl
        # Grouped GEMM pays for stacking all E experts' weights, so only when there are many pairs per expert
        # (a batch-1 decode step touches k experts; the dispatch loop then reads only those).
        many = u.shape[0] * self.top_k >= 16 * self.n_experts
        return "grouped" if many and u.is_cuda and grouped_gemm_runs(u.device, _compute_dtype(u)) else "dispatch"

    # ---- balance ---------------------------------------------------------------------------------
    def _record(self, routing: Routing, n_sequences: int) -> None:
        balance = balance_loss(routing, n_sequences)
        self.aux_loss = self.aux_loss_alpha * balance
        self.balance = balance.detach()
        with torch.no_grad():
            self.load = tokens_per_expert(routing.experts, self.n_experts)
            if self.expert_bias is not None and self.training:
                self._load_since_update = (self.load if self._load_since_update is None
                                           else self._load_since_update + self.load)

    @torch.no_grad()
    def update_bias(self) -> None:
        """V3's auxiliary-loss-free balancing, once per optimizer step: b_i -= gamma for an expert that took
        more than the mean load since the last update, b_i += gamma for one that took less."""
        if self.expert_bias is None or self._load_since_update is None:
            return
        load = self._load_since_update
        self.expert_bias += self.bias_update_speed * torch.sign(load.mean() - load)
        self._load_since_update = None

    def extra_repr(self) -> str:
        shared = self.shared_experts.gate_proj.out_features if self.shared_experts is not None else 0
        return (f"routed={self.n_experts} x {self.experts[0].gate_proj.out_features}, top_k={self.top_k}, "
                f"shared width={shared}, scoring={self.scoring}, impl={self.impl}")


# ---- DeepSeek-V2 and V3's router (arXiv 2405.04434 section 2.2; 2412.19437 section 2.1.2) ----------------------
def route_v2v3(logits: torch.Tensor, k: int, topk_method: str = "greedy", n_group: int | None = None,
               topk_group: int | None = None, norm_topk_prob: bool = False, routed_scaling: float = 1.0,
               bias: torch.Tensor | None = None) -> Routing:
    """The routers of transformers' DeepseekV2TopkRouter and DeepseekV3TopkRouter, in float32.

    "greedy"                V2 (and DeepSeekMoE): softmax scores, the k largest
    "group_limited_greedy"  V2: softmax; the E experts form n_group groups (V2: one per device), a group is scored
                            by its best expert, and each token chooses only within its topk_group best groups
    "noaux_tc"              V3: sigmoid scores s_i; b_i (e_score_correction_bias, the loss-free balancing bias) is
                            added for choosing only; a group is scored by the sum of its two best s_i + b_i;
                            gates are the chosen s_i, renormalised (norm_topk_prob) and x routed_scaling (2.5)
    """
    logits = logits.float()
    T, E = logits.shape
    v3 = topk_method == "noaux_tc"
    scores = logits.sigmoid() if v3 else logits.softmax(dim=-1)  # (T, E)
    choice = scores + bias.float() if (v3 and bias is not None) else scores
    if topk_method != "greedy":
        groups = rearrange(choice, "T (g e) -> T g e", g=n_group)
        group_score = groups.topk(2, dim=-1).values.sum(dim=-1) if v3 else groups.amax(dim=-1)  # (T, g)
        best = group_score.topk(topk_group, dim=-1).indices  # (T, topk_group)
        allowed = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, best, True)
        allowed = repeat(allowed, "T g -> T (g e)", e=E // n_group)
        choice = choice.masked_fill(~allowed, float("-inf"))  # experts outside the chosen groups cannot win
    experts = choice.topk(k, dim=-1).indices  # (T, k)
    weights = scores.gather(-1, experts)
    if norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return Routing(scores=scores, experts=experts, weights=weights * routed_scaling)


class TopkRouter(nn.Linear):
    """V2/V3's router: `gate.weight` (E, d) as a Linear without bias, plus for V3 the buffer
    `gate.e_score_correction_bias` (E,), the selection bias b_i, as the checkpoints name them."""

    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__(config.d_model, config.n_routed_experts, bias=False, device=device, dtype=dtype)
        self.k, self.topk_method = config.n_experts_per_token, config.topk_method
        self.n_group, self.topk_group = config.n_group or 1, config.topk_group or 1
        self.norm_topk_prob, self.routed_scaling = config.norm_topk_prob, config.routed_scaling
        if config.router_scoring == "sigmoid":
            self.register_buffer("e_score_correction_bias",
                                 torch.zeros(config.n_routed_experts, device=device, dtype=torch.float32))
        else:
            self.e_score_correction_bias = None

    def choose(self, logits: torch.Tensor) -> Routing:
        return route_v2v3(logits, self.k, self.topk_method, self.n_group, self.topk_group, self.norm_topk_prob,
                          self.routed_scaling, self.e_score_correction_bias)


class DeepSeekV3MoE(DeepSeekMoE):
    """The MoE block of DeepSeek-V2 and V3: DeepSeekMoE's shared and fine-grained experts (same names, same
    three implementations of the routed sum) with V2/V3's router (TopkRouter). With bias_update_speed > 0,
    update_bias() moves `gate.e_score_correction_bias` as DeepSeekMoE moves its expert_bias."""

    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__(config.replace(bias_update_speed=0.0), device=device, dtype=dtype)
        self.gate = TopkRouter(config, device=device, dtype=dtype)
        self.bias_update_speed = config.bias_update_speed
        if self.bias_update_speed > 0 and self.gate.e_score_correction_bias is None:
            raise ValueError("DeepSeekV3MoE: bias_update_speed needs V3's sigmoid router (router_scoring='sigmoid')")

    def route(self, u: torch.Tensor) -> Routing:
        with torch.autocast(u.device.type, enabled=False):  # float32, as DeepSeekMoE.route
            logits = F.linear(u.float(), self.gate.weight.float())  # (T, E)
        return self.gate.choose(logits)

    def reset_parameters(self) -> None:
        if self.gate.e_score_correction_bias is not None:
            with torch.no_grad():
                self.gate.e_score_correction_bias.zero_()
        self._load_since_update = None

    def _record(self, routing: Routing, n_sequences: int) -> None:
        super()._record(routing, n_sequences)
        if self.bias_update_speed > 0 and self.training:
            self._load_since_update = (self.load if self._load_since_update is None
                                       else self._load_since_update + self.load)

    @torch.no_grad()
    def update_bias(self) -> None:
        if self.bias_update_speed <= 0 or self._load_since_update is None:
            return
        load = self._load_since_update
        self.gate.e_score_correction_bias += self.bias_update_speed * torch.sign(load.mean() - load)
        self._load_since_update = None


# ---- grouped GEMM, where this torch has it ----------------------------------------------------------------
def grouped_mm_fn():
    """torch.nn.functional.grouped_mm (torch >= 2.10), else torch._grouped_mm (2.8, 2.9), else None."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_gemm_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether grouped_mm_fn() has a kernel for this device and dtype: bf16 on CUDA (SM90 before torch 2.9,
    SM80 after); any float dtype on the CPU from torch 2.9. Rows must also be 16-byte aligned (see the test)."""
    if grouped_mm_fn() is None:
        return False
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return dtype == torch.bfloat16 and (major >= 8 if version >= (2, 9) else major == 9)
    return device.type == "cpu" and version >= (2, 9)


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    """The dtype the matrix products run in: autocast's (bf16 in training) if it is on, else the input's."""
    try:
        if torch.is_autocast_enabled(u.device.type):
            return torch.get_autocast_dtype(u.device.type)
    except TypeError:  # torch < 2.4 takes no device argument
        pass
    return u.dtype
