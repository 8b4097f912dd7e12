"""Core v2: the base keeps its parameters, tensors are composed on use, idcompress is a PEFT method."""

import copy

import pytest
import torch
from peft import PeftModel, PeftModelForCausalLM, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model, save_checkpoint

IDS = torch.tensor([[3, 17, 42, 8, 5], [9, 2, 77, 31, 4]])


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=32, n_embd=16, n_layer=2, n_head=2)).eval()


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def nudge(model, scale=2.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.theta_d.copy_(torch.randn(model.theta_d.shape, generator=g) * scale)
        if model.said_lambda is not None:
            model.said_lambda.copy_(1 + 0.3 * torch.randn(model.said_lambda.shape, generator=g))


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("projection", ["said", "fastfood"])
def test_peft_route_generates_like_the_merged_model(make, projection):
    base = make()
    assert base.get_input_embeddings().weight is base.get_output_embeddings().weight  # tied
    reference = copy.deepcopy(base)
    with torch.no_grad():
        base_logits = reference(input_ids=IDS).logits
        base_tokens = reference.generate(IDS[:1], max_new_tokens=8, do_sample=False)
    model = get_peft_model(base, IntrinsicConfig(d=300, projection=projection, task_type="CAUSAL_LM"))
    assert isinstance(model, PeftModelForCausalLM) and isinstance(model.base_model, IntrinsicModel)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.get_base_model().num_parameters() == reference.num_parameters() > 0
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == 300 and total == reference.num_parameters() + 300
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, base_logits)  # θ_d = 0 is the base exactly
    nudge(model)
    model.eval()
    with torch.no_grad():
        tuned_logits = model(input_ids=IDS).logits
        tokens = model.generate(input_ids=IDS[:1], max_new_tokens=8, do_sample=False)
        with model.disable_adapter():
            assert torch.equal(model(input_ids=IDS).logits, base_logits)
    assert not torch.equal(tuned_logits, base_logits)
    assert not torch.equal(tokens, base_tokens)
    merged = model.merge_and_unload()
    assert type(merged) is type(reference)
    assert merged.get_input_embeddings().weight is merged.get_output_embeddings().weight  # still tied
    with torch.no_grad():
        assert torch.equal(merged(input_ids=IDS).logits, tuned_logits)
        assert torch.equal(merged.generate(IDS[:1], max_new_tokens=8, do_sample=False), tokens)


def test_base_keeps_its_parameters_and_only_the_vectors_train():
    base = tiny_gpt2()
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    names = [n for n, _ in base.named_parameters()]
    model = get_intrinsic_model(base, IntrinsicConfig(d=200, task_type="CAUSAL_LM"))
    assert [n for n, _ in model.get_base_model().named_parameters()] == names
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["base_model.intrinsic_layer.intrinsic_theta_d.default",
                         "base_model.intrinsic_layer.intrinsic_lambda.default"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(5):
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in model.get_base_model().named_parameters():
        assert torch.equal(p, before[n]), n  # θ₀ bit-unchanged
        assert p.grad is None


def test_tied_weight_gradient_sums_both_uses():
    """The delta applies once to the shared tensor; both uses' gradients reach θ_d."""
    model = get_intrinsic_model(tiny_gpt2(), IntrinsicConfig(d=64, projection="dense", task_type="CAUSAL_LM"))
    nudge(model, 0.5)
    tuner = model.base_model
    names = tuner.layout.names
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    got = model.theta_d.grad.clone()
    # reference: compose every tensor once as a leaf, run the merged model, chain rule by hand
    merged = copy.deepcopy(model).merge_and_unload()
    params = dict(merged.named_parameters())
    merged.zero_grad()
    for p in merged.parameters():
        p.requires_grad_(True)
    merged(input_ids=IDS, labels=IDS).loss.backward()
    P = tuner.projection.materialize()
    flat = torch.cat([params[n].grad.reshape(-1) for n in names])
    assert torch.allclose(got, P.T @ flat, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("projection", ["said", "fastfood"])
def test_recompute_and_gradient_checkpointing_give_the_same_gradients(projection):
    grads = {}
    for mode in ("keep", "recompute", "checkpointing", "both"):
        base = tiny_llama()
        base.train()
        if mode in ("checkpointing", "both"):
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = get_intrinsic_model(base, IntrinsicConfig(d=300, projection=projection, task_type="CAUSAL_LM"))
        model.base_model.recompute = mode in ("recompute", "both")
        nudge(model)
        model(input_ids=IDS, labels=IDS).loss.backward()
        grads[mode] = (model.theta_d.grad.clone(),
                       None if model.said_lambda is None else model.said_lambda.grad.clone())
    for mode in ("recompute", "checkpointing", "both"):
        for a, b in zip(grads[mode], grads["keep"]):
            if a is not None:
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), mode


def test_recompute_saves_recipes_instead_of_composed_weights(monkeypatch):
    """With recompute, every tensor autograd saves from a composed weight becomes a recipe (one per
    weight a backward needs: 7 matmuls and 2 RMSNorm scales per Llama layer, the final norm and the
    tied head); without it, none does."""
    from idcompress.tuners import compose

    made = []

    class Counting(compose._Recipe):
        __slots__ = ()

        def __init__(self, index, t, source=None):
            made.append(index)
            super().__init__(index, t, source)

    monkeypatch.setattr(compose, "_Recipe", Counting)
    base = tiny_llama().train()
    model = get_intrinsic_model(base, IntrinsicConfig(d=300, task_type="CAUSAL_LM"))
    nudge(model)
    for recompute in (False, True):
        model.base_model.recompute = recompute
        made.clear()
        model(input_ids=IDS, labels=IDS).loss.backward()
        assert len(made) == (2 * (7 + 2) + 1 + 1 if recompute else 0), made


def test_inference_cache_composes_once_per_vector_change():
    model = get_intrinsic_model(tiny_gpt2(), IntrinsicConfig(d=200, task_type="CAUSAL_LM")).eval()
    nudge(model)
    calls = []
    proj = model.base_model.projection
    real = proj.range_apply

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    proj.range_apply = counting
    with torch.no_grad():
        first = model(input_ids=IDS).logits
        n = len(calls)
        second = model(input_ids=IDS).logits
        assert len(calls) == n and torch.equal(first, second)
        model.theta_d.add_(0.1)
        third = model(input_ids=IDS).logits
        assert len(calls) == 2 * n and not torch.equal(third, first)


def test_config_is_a_peft_config_and_records_the_base(tmp_path):
    base = tiny_gpt2()
    folder = tmp_path / "base"
    base.save_pretrained(folder)
    loaded = GPT2LMHeadModel.from_pretrained(folder)
    model = get_intrinsic_model(loaded, IntrinsicConfig(d=200, task_type="CAUSAL_LM"))
    assert model.peft_config["default"].base_model_name_or_path == str(folder)
    model.save_pretrained(tmp_path / "peft-written")  # PEFT's own writer
    save_checkpoint(model, tmp_path / "ours")
    again = IntrinsicModel.from_pretrained(tmp_path / "peft-written")  # base resolved from the record
    other = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(folder), tmp_path / "ours")
    nudge(model)
    with torch.no_grad():
        for m in (again, other):
            m.base_model.theta_d.copy_(model.theta_d)
            m.base_model.said_lambda.copy_(model.said_lambda)
            assert torch.equal(m(input_ids=IDS).logits, model(input_ids=IDS).logits)


def test_one_adapter_per_model():
    model = get_intrinsic_model(tiny_gpt2(), IntrinsicConfig(d=200, task_type="CAUSAL_LM"))
    with pytest.raises(ValueError, match="one adapter"):
        model.add_adapter("second", IntrinsicConfig(d=200, task_type="CAUSAL_LM"))


def test_ddp_ignores_the_frozen_base():
    model = get_intrinsic_model(tiny_gpt2(), IntrinsicConfig(d=200, task_type="CAUSAL_LM"))
    ignore = set(model._ddp_params_and_buffers_to_ignore)
    for name, p in model.named_parameters():
        assert (name in ignore) != p.requires_grad, name


@pytest.mark.parametrize("fused", [False, True])
def test_every_step_trains_lambda_and_theta_with_fused_adamw(fused):
    """Fused AdamW updates θ_d in place without bumping its version: the composition must see it."""
    model = get_intrinsic_model(tiny_gpt2(), IntrinsicConfig(d=200, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05, fused=fused)
    for step in range(3):
        model(input_ids=IDS, labels=IDS).loss.backward()
        if step:  # at θ_d = 0, Pθ_d = 0 and λ's gradient is exactly 0
            assert model.said_lambda.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        tuned = model(input_ids=IDS).logits
        with model.disable_adapter():
            assert not torch.equal(model(input_ids=IDS).logits, tuned)


def test_ddp_syncs_only_the_trained_vectors():
    """Under DistributedDataParallel only θ_d and λ are broadcast and all-reduced (gloo, one
    process on loopback)."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = get_intrinsic_model(tiny_gpt2(), IntrinsicConfig(d=200, task_type="CAUSAL_LM"))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        synced = {n for n, p in model.named_parameters() if n not in ddp.parameters_to_ignore}
        assert synced == {"base_model.intrinsic_layer.intrinsic_theta_d.default",
                          "base_model.intrinsic_layer.intrinsic_lambda.default"}
        assert len(ddp._module_parameters) == 2
        ddp(input_ids=IDS, labels=IDS).loss.backward()
        assert model.theta_d.grad is not None
    finally:
        dist.destroy_process_group()


def test_t5_seq2seq_generates_like_the_merged_model():
    from peft import PeftModelForSeq2SeqLM
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    base = T5ForConditionalGeneration(T5Config(vocab_size=96, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                               num_heads=2, decoder_start_token_id=0)).eval()
    model = get_intrinsic_model(base, IntrinsicConfig(d=300, task_type="SEQ_2_SEQ_LM"))
    assert isinstance(model, PeftModelForSeq2SeqLM)
    nudge(model)
    model.eval()
    with torch.no_grad():
        tokens = model.generate(input_ids=IDS, max_new_tokens=6, do_sample=False)
        logits = model(input_ids=IDS, decoder_input_ids=IDS).logits
    merged = model.merge_and_unload()
    with torch.no_grad():
        assert torch.equal(merged(input_ids=IDS, decoder_input_ids=IDS).logits, logits)
        assert torch.equal(merged.generate(input_ids=IDS, max_new_tokens=6, do_sample=False), tokens)


@pytest.fixture
def streamed(monkeypatch):
    """The streamed ops' forwards as they run; Linear/Embedding weights streamed in chunks of 7
    rows of 16 (a ragged last chunk)."""
    from idcompress.tuners import compose

    monkeypatch.setattr(compose, "_CHUNK_NUMEL", 16 * 7)
    calls = []
    for name in ("_StreamedLinear", "_StreamedEmbedding"):
        fn = getattr(compose, name)
        monkeypatch.setattr(fn, "forward", staticmethod(
            lambda ctx, *a, _f=fn.forward, _n=name: calls.append(_n) or _f(ctx, *a)))
    return calls


def _streamed_run(make, projection, mode, steps=0, padding_idx=None, ids=IDS, checkpointing=False):
    """Logits, θ_d's and λ's gradients (or θ_d after ``steps`` AdamW steps) in ``mode``: ``keep``,
    or ``stream`` (recompute, every Linear/Embedding weight streamed)."""
    base = make().train()
    if padding_idx is not None:
        base.get_input_embeddings().padding_idx = padding_idx
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_intrinsic_model(base, IntrinsicConfig(d=300, projection=projection, task_type="CAUSAL_LM"))
    composer = model.base_model.composer
    composer.recompute, composer.stream_min_numel = mode == "stream", 0
    nudge(model)
    if steps:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
        for _ in range(steps):
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
        return model.theta_d.detach().clone()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    lam = None if model.said_lambda is None else model.said_lambda.grad.clone()
    return out.logits.detach(), model.theta_d.grad.clone(), lam


def _close(got, ref):
    for a, b in zip(got, ref):
        if b is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("projection", ["said", "fastfood"])
def test_streamed_linear_and_embedding_match_the_hook_path(make, projection, streamed):
    """Streamed (tied) embedding and head: same logits and gradients as composing whole weights."""
    ref = _streamed_run(make, projection, "keep")
    assert not streamed
    got = _streamed_run(make, projection, "stream")
    assert "_StreamedEmbedding" in streamed and "_StreamedLinear" in streamed
    _close(got, ref)


def test_streamed_embedding_gives_padding_idx_no_gradient(streamed):
    ids = IDS.clone()
    ids[:, -1] = 4  # the padding id, so its row is used
    ref = _streamed_run(tiny_llama, "said", "keep", padding_idx=4, ids=ids)
    got = _streamed_run(tiny_llama, "said", "stream", padding_idx=4, ids=ids)
    assert "_StreamedEmbedding" in streamed
    _close(got, ref)


def test_streamed_training_ends_at_the_same_theta(streamed):
    ref = _streamed_run(tiny_llama, "said", "keep", steps=5)
    got = _streamed_run(tiny_llama, "said", "stream", steps=5)
    assert len(streamed) == 5 * 16  # per step: the tied embedding, 7 matmuls × 2 layers, the head
    assert ((got - ref).norm() / ref.norm()).item() < 1e-6


def test_streaming_only_for_large_weights_and_not_with_scale_grad_by_freq(streamed):
    base = tiny_llama().train()
    base.get_input_embeddings().scale_grad_by_freq = True  # not streamed: the hook path runs it
    model = get_intrinsic_model(base, IntrinsicConfig(d=300, task_type="CAUSAL_LM"))
    nudge(model)
    model(input_ids=IDS, labels=IDS).loss.backward()
    ref = model.theta_d.grad.clone()
    model.theta_d.grad = None
    model.base_model.recompute = True
    model(input_ids=IDS, labels=IDS).loss.backward()
    assert streamed == []  # every weight of the tiny model is under the default threshold
    model.theta_d.grad = None
    model.base_model.composer.stream_min_numel = 96 * 16  # the tied embedding/head only
    model(input_ids=IDS, labels=IDS).loss.backward()
    assert streamed == ["_StreamedLinear"]
    assert torch.allclose(model.theta_d.grad, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_streamed_under_gradient_checkpointing(streamed):
    """Checkpointing's own saved-tensor hooks still see what the recipe hooks do not turn into
    recipes (else checkpointing would keep the activations it means to drop); same gradients."""
    ref = _streamed_run(tiny_llama, "said", "keep")
    got = _streamed_run(tiny_llama, "said", "stream", checkpointing=True)
    assert "_StreamedEmbedding" in streamed and "_StreamedLinear" in streamed
    _close(got, ref)


def test_recipe_hooks_pass_other_tensors_to_the_outer_hooks(monkeypatch):
    """Under hooks already active (checkpointing's), recompute packs only the composed weights
    into recipes; every other saved tensor still reaches the outer hooks."""
    from idcompress.tuners import compose

    recipes = []

    class Counting(compose._Recipe):
        __slots__ = ()

        def __init__(self, index, t, source=None):
            recipes.append(index)
            super().__init__(index, t, source)

    monkeypatch.setattr(compose, "_Recipe", Counting)
    model = get_intrinsic_model(tiny_llama().train(), IntrinsicConfig(d=300, task_type="CAUSAL_LM"))
    nudge(model)
    seen = {}
    for recompute in (False, True):
        model.base_model.recompute = recompute
        packed = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, packed=packed: packed.append(1) or t,
                                                      lambda t: t):
            loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        seen[recompute] = len(packed)
    assert recipes and seen[True] == seen[False] - len(recipes)


def test_streamed_minilm_word_embedding_matches_keep(minilm_path):
    """MiniLM at the default threshold: only the word embedding (30522 × 384, padding_idx 0) is
    streamed; logits and gradients equal the keep path's to float32 round-off."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    from idcompress.tuners import compose

    logging.set_verbosity_error()
    torch.manual_seed(0)
    ids = torch.randint(1, 30000, (4, 32))
    ids[:, -5:] = 0  # the padding id, used
    labels = torch.tensor([0, 1, 1, 0])
    res = {}
    for recompute in (False, True):
        torch.manual_seed(0)  # the same new head in both
        base = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
        model = get_intrinsic_model(base, IntrinsicConfig(d=1000, task_type="SEQ_CLS"))
        model.base_model.recompute = recompute
        nudge(model, 1.0)
        model.train()
        made = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(compose._StreamedWeight, "make", staticmethod(
                lambda *a, made=made, real=compose._StreamedWeight.make: made.append(a[2]) or real(*a)))
            torch.manual_seed(0)  # the same dropout masks
            out = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels)
            out.loss.backward()
        assert made == ([model.base_model.layout.names.index("bert.embeddings.word_embeddings.weight")]
                        if recompute else [])
        res[recompute] = (out.logits.detach(), model.theta_d.grad.clone(), model.said_lambda.grad.clone())
    _close(res[True], res[False])
