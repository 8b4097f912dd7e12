"""The adapter: exactness at init, merge, trainability, devices/dtypes, bad input."""

import copy

import pytest
import torch
from peft import PeftModel
from torch import nn

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model
from idcompress.tuners.init import init_new_params, resolve_new_params

THETA_D = "base_model.intrinsic_layer.intrinsic_theta_d.default"
LAMBDA = "base_model.intrinsic_layer.intrinsic_lambda.default"

SENTENCES = ["a wonderful, moving film", "a dull, lifeless mess", "great acting", "boring and far too long"]


def _batch(tok):
    return tok(SENTENCES, return_tensors="pt", padding=True)


def _mlp(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


@pytest.mark.parametrize("projection", ["said", "fastfood", "dense", "sparse"])
def test_only_the_vector_trains_and_init_is_exact(tiny_bert, projection):
    base = tiny_bert()
    ref = copy.deepcopy(base)
    model = get_intrinsic_model(base, IntrinsicConfig(d=200, projection=projection, init_new=None))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == ({THETA_D, LAMBDA} if projection == "said" else {THETA_D})
    assert not any(p.requires_grad for p in model.get_base_model().parameters())  # θ₀ is frozen
    assert model.theta_d.numel() == (200 - model.layout.m if projection == "said" else 200)
    x = torch.randint(0, 100, (3, 7))
    ref.eval(), model.eval()
    assert torch.equal(model(input_ids=x).logits, ref(input_ids=x).logits)


def test_minilm_exact_at_zero_and_merge(minilm_classifier, minilm_tokenizer):
    ref = copy.deepcopy(minilm_classifier)
    names = resolve_new_params(ref, "auto")
    assert names == ["classifier.weight", "classifier.bias"]
    init_new_params(ref, names, seed=0, std=ref.config.initializer_range)
    model = get_intrinsic_model(minilm_classifier, IntrinsicConfig(d=1000, projection="said", seed=0))
    assert model.intrinsic_config.init_new == names
    batch = _batch(minilm_tokenizer)
    ref.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, ref(**batch).logits)
        g = torch.Generator().manual_seed(0)
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
        model.said_lambda.copy_(1 + 0.5 * torch.randn(model.said_lambda.shape, generator=g))
        tuned = model(**batch).logits
    assert not torch.allclose(tuned, ref(**batch).logits, atol=1e-4)
    merged = model.merge_and_unload()
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert all(isinstance(p, nn.Parameter) for p in merged.parameters())
    merged.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, tuned, rtol=1e-5, atol=1e-5)


def test_minilm_said_training_smoke(minilm_classifier, minilm_tokenizer):
    pos = ["a wonderful, moving film", "great acting and a clever script", "I loved every minute of it",
           "a delightful surprise", "beautifully shot and deeply felt", "funny, warm and smart"]
    neg = ["a dull, lifeless mess", "boring and far too long", "I hated every minute of it",
           "a tedious waste of time", "clumsy writing and flat acting", "painfully unfunny"]
    batch = minilm_tokenizer(pos + neg, return_tensors="pt", padding=True)
    labels = torch.tensor([1] * 6 + [0] * 6)
    model = get_intrinsic_model(minilm_classifier, IntrinsicConfig(d=500, projection="said", seed=0))
    # θ₀ lives in the base's own parameters: every one of them, tuned or not
    frozen = {n: p.detach().clone() for n, p in model.get_base_model().named_parameters()}
    assert len(frozen) == model.layout.m
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.2, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(20):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.6 * losses[0], losses
    after = dict(model.get_base_model().named_parameters())
    assert after.keys() == frozen.keys()
    assert all(torch.equal(p, frozen[n]) and not p.requires_grad for n, p in after.items())  # θ₀ bit-unchanged
    assert model.theta_d.abs().sum() > 0 and not torch.equal(model.said_lambda, torch.ones_like(model.said_lambda))


def test_plain_module_and_gradient_flow():
    base = _mlp()
    ref = copy.deepcopy(base)
    model = get_intrinsic_model(base, IntrinsicConfig(d=20, projection="dense", seed=1))
    x = torch.randn(5, 8)
    assert torch.equal(model(x), ref(x))
    model(x).pow(2).sum().backward()
    assert model.theta_d.grad is not None and model.theta_d.grad.abs().sum() > 0
    # the gradient is Pᵀ ∇θ: compare with autograd through the materialised matrix
    P = model.projection.materialize()
    flat = torch.cat([p.reshape(-1) for p in ref.parameters()]).detach().requires_grad_(True)
    sizes = [p.numel() for p in ref.parameters()]
    params = {n: t.view(p.shape) for (n, p), t in zip(ref.named_parameters(), flat.split(sizes))}
    torch.func.functional_call(ref, params, (x,)).pow(2).sum().backward()
    torch.testing.assert_close(model.theta_d.grad, P.T @ flat.grad, rtol=1e-4, atol=1e-5)


def test_dtype_and_device_moves():
    base = _mlp().to(torch.bfloat16)
    model = get_intrinsic_model(base, IntrinsicConfig(d=30, projection="fastfood"))
    assert base[0].weight.dtype == torch.bfloat16 and model.theta_d.dtype == torch.float32
    assert model.base_model.composed("0.weight").dtype == torch.bfloat16  # composed in θ₀'s dtype
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    model(x).float().sum().backward()
    assert model.theta_d.grad.dtype == torch.float32 and model.theta_d.grad.abs().sum() > 0
    model = model.to("cpu").to(torch.float64)
    with torch.no_grad():
        model.theta_d.fill_(0.1)
        out = model(x.double())
    assert out.dtype == torch.float64
    assert model.get_base_model()[0].weight.dtype == torch.float64
    assert model.base_model.composed("0.weight").dtype == torch.float64


def test_no_grad_cache_follows_updates():
    model = get_intrinsic_model(_mlp(), IntrinsicConfig(d=10, projection="sparse"))
    x = torch.randn(2, 8)
    with torch.no_grad():
        a = model(x)
        model.theta_d.add_(1.0)
        b = model(x)
    assert not torch.allclose(a, b)


def test_tied_weights_are_tuned_once():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    base = nn.Sequential(emb, head)
    model = get_intrinsic_model(base, IntrinsicConfig(d=8, projection="dense", init_new=None))
    assert model.layout.D == 40 and model.layout.m == 1
    with torch.no_grad():
        model.theta_d.fill_(0.3)
        model(torch.tensor([1, 2]))
    assert base[0].weight is base[1].weight
    merged = model.merge_and_unload()
    assert merged[0].weight is merged[1].weight


def test_trainable_count_printed(capsys):
    model = get_intrinsic_model(_mlp(), IntrinsicConfig(d=40, projection="said"))
    model.print_trainable_parameters()
    out = capsys.readouterr().out
    # all params: the D = 195 numbers of θ₀ (the base keeps them) + the 40 trained ones
    assert "trainable params: 40 " in out and "all params: 235 " in out
    assert model.get_nb_trainable_parameters() == (40, 235)
    assert isinstance(model, PeftModel) and isinstance(model.base_model, IntrinsicModel)
    # DDP never broadcasts or reduces the frozen θ₀: every name but the trained vectors is ignored
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    assert {n for n, _ in model.named_parameters()} - ignored == {THETA_D, LAMBDA}
    assert {"0.weight", "model.0.weight", "base_model.model.0.weight"} <= ignored


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"d": 0}, "d must be a positive integer, got d=0"),
        ({"d": 10, "projection": "fourier"}, "projection='fourier' is unknown"),
        ({"d": 3, "projection": "said"}, r"needs d > m = 4 .* got d=3"),
        ({"d": 500, "projection": "fastfood"}, "d=500 is larger than D=195"),
        ({"d": 10, "include": ["nothing.*"]}, "select no floating-point parameter"),
        ({"d": 10, "include": ["0.*", "missing.*"]}, "include pattern 'missing.*' matches no"),
        ({"d": 10, "seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_intrinsic_model(_mlp(), IntrinsicConfig(**kwargs))


def test_non_float_selection_is_refused():
    m = _mlp()
    m.register_parameter("steps", nn.Parameter(torch.zeros(3, dtype=torch.long), requires_grad=False))
    with pytest.raises(ValueError, match="only floating-point tensors can be tuned"):
        get_intrinsic_model(m, IntrinsicConfig(d=5, include=["steps", "0.*"]))
    # by default non-float parameters are simply not tuned
    assert get_intrinsic_model(m, IntrinsicConfig(d=5, projection="dense")).layout.m == 4


def test_huge_dense_refused_before_allocation():
    big = nn.Linear(4096, 4096)
    with pytest.raises(ValueError, match="use projection='fastfood'"):
        get_intrinsic_model(big, IntrinsicConfig(d=50_000, projection="dense"))
    assert isinstance(big._parameters["weight"], nn.Parameter)  # untouched


def _reference(ref, model, args=(), kwargs=None, loss_fn=lambda out: out):
    """Loss and gradients (θ_d, λ) computed without the adapter's hooks: the whole layout's
    θ = θ₀ + λ·(P θ_d) materialised with the projection's own differentiable ``apply`` and run
    through ``ref`` (an untouched copy of the base) by ``functional_call``."""
    x = model.theta_d.detach().clone().requires_grad_(True)
    lam = None if model.said_lambda is None else model.said_lambda.detach().clone().requires_grad_(True)
    delta = model.projection.apply(x)
    theta0 = dict(ref.named_parameters())
    params = {}
    for i, e in enumerate(model.layout.entries):
        piece = delta[e.offset : e.offset + e.numel].view(e.shape)
        params[e.name] = theta0[e.name].detach() + (piece if lam is None else lam[i] * piece)
    loss = loss_fn(torch.func.functional_call(ref, params, args, kwargs))
    loss.backward()
    return loss.detach(), x.grad, None if lam is None else lam.grad


@pytest.mark.parametrize("projection", ["said", "fastfood"])
def test_composition_on_use_matches_the_materialised_reference(tiny_bert, projection):
    base = tiny_bert()
    ref = copy.deepcopy(base).eval()
    model = get_intrinsic_model(base, IntrinsicConfig(d=300, projection=projection, init_new=None))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
        if model.said_lambda is not None:
            model.said_lambda.copy_(1 + 0.3 * torch.randn(model.said_lambda.shape, generator=g))
    x = torch.randint(0, 100, (4, 9), generator=g)
    labels = torch.tensor([0, 1, 1, 0])
    model.eval()
    loss = model(input_ids=x, labels=labels).loss
    loss.backward()
    l2, g2, s2 = _reference(ref, model, kwargs={"input_ids": x, "labels": labels}, loss_fn=lambda out: out.loss)
    torch.testing.assert_close(loss.detach(), l2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.theta_d.grad, g2, rtol=1e-4, atol=1e-6)
    if s2 is not None:
        torch.testing.assert_close(model.said_lambda.grad, s2, rtol=1e-4, atol=1e-6)


class _WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _mlp(1)
        self.unused = nn.Linear(5, 5)  # its gradient never arrives (None in the backward)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("recompute", [False, True], ids=["keep", "recompute"])
@pytest.mark.parametrize("projection", ["said", "fastfood"])
def test_unused_tensor_repeated_and_stale_forwards(projection, recompute):
    base = _WithUnused()
    ref = copy.deepcopy(base)
    model = get_intrinsic_model(base, IntrinsicConfig(d=40, projection=projection))
    model.recompute = recompute
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g))
    x = torch.randn(6, 8, generator=g)

    def grads(forwards=1):
        model.zero_grad()
        sum(model(x).square().sum() for _ in range(forwards)).backward()
        return [p.grad.clone() for p in (model.theta_d, model.said_lambda) if p is not None]

    _, *expected = _reference(ref, model, (x,), loss_fn=lambda out: out.square().sum())
    expected = [e for e in expected if e is not None]
    once = grads()
    for a, b in zip(once, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if model.said_lambda is not None:  # the unused tensors' scales get a zero gradient, not None
        assert torch.equal(once[1][-2:], torch.zeros(2)) and once[1][:-2].abs().min() > 0
    # two forwards with the same θ_d both count: their gradients accumulate
    for a, b in zip(grads(forwards=2), expected, strict=True):
        torch.testing.assert_close(a, 2 * b, rtol=1e-4, atol=1e-6)
    # repeated forwards with the same θ_d give identical outputs
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert torch.equal(model(x), model(x))
    # a graph built before θ_d changed backpropagates through the weights of its own forward
    # (recompute rebuilds them from the u and λ that forward used, not from the new θ_d)
    model.zero_grad()
    stale = model(x).square().sum()
    with torch.no_grad():
        model.theta_d.add_(0.1)
    model(x)
    stale.backward()
    for a, b in zip([p.grad for p in (model.theta_d, model.said_lambda) if p is not None], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
