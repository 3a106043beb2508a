"""The DeepSeekMoE FFN (moe.py): against transformers' DeepseekV2Moe, its three paths against each other, the
router's options, the balance loss written out by hand, and V3's bias balancing."""

import pytest
import torch

from minids import ModelConfig
from minids.moe import DeepSeekMoE, balance_loss, grouped_gemm_runs, load_imbalance, route, tokens_per_expert

from conftest import rel_err

# Non-square on purpose (d 48, expert width 40): a transposed or swapped matrix cannot pass unnoticed.
D, F_EXPERT = 48, 40


def moe_config(**changes) -> ModelConfig:
    fields = dict(vocab_size=97, d_model=D, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, max_seq_len=64,
                  n_routed_experts=8, n_shared_experts=2, n_experts_per_token=3, moe_d_ff=F_EXPERT,
                  first_dense_layers=1)
    fields.update(changes)
    return ModelConfig(**fields)


def random_moe(cfg: ModelConfig) -> DeepSeekMoE:
    moe = DeepSeekMoE(cfg)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.2)  # large enough that routers disagree clearly between experts
    return moe


# ---- against transformers -------------------------------------------------------------------------------
def hf_reference(cfg: ModelConfig, routed_scaling: float = 1.0):
    """transformers' DeepseekV2Moe set up as DeepSeekMoE: greedy top-k, no renormalisation, no group limit."""
    from transformers import DeepseekV2Config
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe

    hf = DeepseekV2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_attention_heads=cfg.n_heads, num_hidden_layers=2,
        intermediate_size=cfg.d_ff, moe_intermediate_size=cfg.moe_d_ff, n_routed_experts=cfg.n_routed_experts,
        n_shared_experts=cfg.n_shared_experts, num_experts_per_tok=cfg.n_experts_per_token, topk_method="greedy",
        routed_scaling_factor=routed_scaling, norm_topk_prob=False, n_group=1, topk_group=1, hidden_act="silu")
    return DeepseekV2Moe(hf).eval()


def minids_state_from_hf(ref) -> dict[str, torch.Tensor]:
    """Map DeepseekV2Moe's names onto minids' (= deepseek-moe-16b's). transformers 5 fuses the experts into
    3-D tensors, experts.gate_up_proj (E, 2f, d) = [gate; up] and experts.down_proj (E, d, f); older versions
    kept one module per expert under the checkpoint's own names, which need no mapping."""
    state = ref.state_dict()
    if "experts.gate_up_proj" not in state:
        return state
    out = {k: v for k, v in state.items() if not k.startswith("experts.")}
    gate_up, down = state["experts.gate_up_proj"], state["experts.down_proj"]
    for j in range(gate_up.shape[0]):
        gate, up = gate_up[j].chunk(2, dim=0)
        out[f"experts.{j}.gate_proj.weight"], out[f"experts.{j}.up_proj.weight"] = gate, up
        out[f"experts.{j}.down_proj.weight"] = down[j]
    return out


@pytest.mark.parametrize("routed_scaling", [1.0, 2.5])
@pytest.mark.parametrize("batch, seq", [(1, 1), (3, 17)])
def test_equals_transformers_deepseek_v2_moe(batch, seq, routed_scaling):
    cfg = moe_config(routed_scaling=routed_scaling)
    ref = hf_reference(cfg, routed_scaling)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
    moe = DeepSeekMoE(cfg).eval()
    moe.load_state_dict(minids_state_from_hf(ref), strict=True)
    x = torch.randn(batch, seq, D)
    with torch.no_grad():
        expected = ref(x)
        for impl in ("reference", "dispatch"):
            moe.impl = impl
            assert rel_err(moe(x), expected) <= 1e-5, impl


def test_names_are_deepseek_moe_16b_names():
    moe = DeepSeekMoE(moe_config(n_routed_experts=4, n_shared_experts=2))
    shapes = {k: tuple(v.shape) for k, v in moe.state_dict().items()}
    expected = {"gate.weight": (4, D)}
    groups = [([f"experts.{j}." for j in range(4)], F_EXPERT), (["shared_experts."], 2 * F_EXPERT)]
    for prefixes, width in groups:
        for p in prefixes:
            expected |= {p + "gate_proj.weight": (width, D), p + "up_proj.weight": (width, D),
                         p + "down_proj.weight": (D, width)}
    assert shapes == expected


# ---- the readable path and the fast ones compute one function --------------------------------------------
IMPLS = ["dispatch"] + (["grouped"] if grouped_gemm_runs(torch.device("cpu"), torch.float32) else [])


def run(moe, x, impl):
    """Output, input gradient and every parameter's gradient (None -> 0) of one forward + backward."""
    moe.impl, moe.training = impl, True
    moe.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = moe(x)
    ((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() + moe.aux_loss).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in moe.parameters()]
    return y.detach(), x.grad, grads, moe.load.clone()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("options", [
    dict(),
    dict(norm_topk_prob=True, aux_loss_alpha=0.01, aux_loss_per_sequence=True),
    dict(router_scoring="sigmoid", norm_topk_prob=True, routed_scaling=2.5, bias_update_speed=0.01,
         n_shared_experts=1),
    dict(n_shared_experts=0, n_routed_experts=16, n_experts_per_token=16),  # every expert chosen
])
def test_fast_paths_equal_the_reference(impl, options):
    moe = random_moe(moe_config(**options))
    if moe.expert_bias is not None:
        moe.expert_bias.copy_(torch.randn(moe.n_experts) * 0.1)  # a bias that changes some choices
    x = torch.randn(2, 13, D)
    y0, gx0, g0, load0 = run(moe, x, "reference")
    y1, gx1, g1, load1 = run(moe, x, impl)
    assert rel_err(y1, y0) <= 1e-6 and rel_err(gx1, gx0) <= 1e-6
    assert all(rel_err(a, b) <= 1e-5 for a, b in zip(g1, g0) if b.abs().sum() > 0)
    assert all(a.abs().sum() == 0 for a, b in zip(g1, g0) if b.abs().sum() == 0)
    assert torch.equal(load0, load1) and load0.sum() == 2 * 13 * moe.top_k


def test_unknown_impl():
    with pytest.raises(ValueError, match="impl must be one of"):
        DeepSeekMoE(moe_config()).impl = "fast"


def test_bf16_inference_stays_bf16_and_close():
    moe = random_moe(moe_config())
    x = torch.randn(2, 9, D)
    with torch.no_grad():
        expected = moe(x)
        moe.to(torch.bfloat16)
        got = moe(x.bfloat16())
    assert got.dtype == torch.bfloat16 and rel_err(got, expected) < 0.05


# ---- the router ------------------------------------------------------------------------------------------
def test_route_is_greedy_top_k_of_the_softmax_without_renormalisation():
    logits = torch.randn(50, 10)
    r = route(logits, k=3)
    probs = logits.softmax(-1)
    for t in range(50):
        best = sorted(range(10), key=lambda i: -probs[t, i].item())[:3]
        assert sorted(r.experts[t].tolist()) == sorted(best)
        assert torch.allclose(r.weights[t], probs[t, r.experts[t]])
    assert (r.weights.sum(-1) < 1).all()  # the 16B's gates: not renormalised


def test_route_options():
    logits = torch.randn(20, 6)
    r = route(logits, k=2, norm_topk_prob=True, routed_scaling=2.5)
    assert torch.allclose(r.weights.sum(-1), torch.full((20,), 2.5))
    sig = route(logits, k=2, scoring="sigmoid")
    assert torch.allclose(sig.scores, logits.sigmoid())
    bias = torch.zeros(6)
    bias[5] = 10.0  # expert 5 now always wins the choice ...
    biased = route(logits, k=2, bias=bias)
    assert (biased.experts == 5).any(-1).all()
    assert torch.allclose(biased.weights, biased.scores.gather(-1, biased.experts))  # ... but gates stay scores


# ---- balance ---------------------------------------------------------------------------------------------
def balance_by_hand(scores, experts, n_seq):
    """f_i = N'/(K'T) #{t: t chose i}, P_i = mean_t s_{i,t}, loss = sum_i f_i P_i, averaged over sequences."""
    E, k = scores.shape[1], experts.shape[1]
    T = scores.shape[0] // n_seq
    total = 0.0
    for n in range(n_seq):
        rows = range(n * T, (n + 1) * T)
        for i in range(E):
            f = E / (k * T) * sum(int(i in experts[t].tolist()) for t in rows)
            P = sum(scores[t, i].item() for t in rows) / T
            total += f * P
    return total / n_seq


@pytest.mark.parametrize("n_seq", [1, 3])
def test_balance_loss_is_the_papers_formula(n_seq):
    r = route(torch.randn(3 * 11, 7) * 2, k=2)
    assert balance_loss(r, n_seq).item() == pytest.approx(balance_by_hand(r.scores, r.experts, n_seq), rel=1e-5)


def test_balance_loss_is_one_when_balanced_and_pushes_probability_off_busy_experts():
    logits = torch.zeros(8, 4, requires_grad=True)  # uniform probabilities
    experts = torch.tensor([[0, 1], [2, 3]] * 4)  # every expert chosen equally often
    r = route(logits, k=2)
    r.experts = experts
    assert balance_loss(r).item() == pytest.approx(1.0)
    busy = route(logits, k=2)
    busy.experts = torch.tensor([[0, 1]] * 8)  # experts 0 and 1 take everything
    balance_loss(busy).backward()
    assert (logits.grad[:, :2] > 0).all() and (logits.grad[:, 2:] < 0).all()  # descent lowers 0, 1


def test_module_keeps_aux_loss_balance_and_load():
    moe = random_moe(moe_config(aux_loss_alpha=0.003, aux_loss_per_sequence=True))
    x = torch.randn(2, 10, D)
    moe(x)
    r = moe.route(x.flatten(0, 1))
    assert moe.aux_loss.requires_grad
    assert moe.aux_loss.item() == pytest.approx(0.003 * balance_loss(r, 2).item())
    assert torch.equal(moe.load, tokens_per_expert(r.experts, 8)) and moe.load.sum() == 20 * 3
    assert load_imbalance(moe.load) >= 1


def test_v3_bias_moves_against_the_load_and_evens_it_out():
    moe = random_moe(moe_config(bias_update_speed=0.02, n_routed_experts=8, n_experts_per_token=2))
    with torch.no_grad():
        moe.gate.weight[0] += 0.5  # a router that prefers expert 0
    x = torch.randn(4, 16, D)
    moe.train()
    moe(x)
    first = moe.load.clone()
    moe.update_bias()
    busy, idle = first > first.mean(), first < first.mean()
    assert (moe.expert_bias[busy] == -0.02).all() and (moe.expert_bias[idle] == 0.02).all()
    for _ in range(60):
        moe(x)
        moe.update_bias()
    moe(x)
    assert load_imbalance(moe.load) < load_imbalance(first)
    moe.eval()
    moe(x)
    moe.update_bias()  # evaluation forwards do not count as load
    assert moe._load_since_update is None
