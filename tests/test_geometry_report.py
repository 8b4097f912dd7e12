"""Hidden-state collection and the geometry report, on tiny models built from configs (no
downloads); the packaged MiniLM tokenizer is used for ``tokenize_texts``."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from helpers import PNG_MAGIC
from torch import nn

from idcompress.geometry import (
    METRICS,
    collect_hidden_states,
    format_table,
    geometry_report,
    linear_cka,
    tokenize_texts,
)


def tiny_bert_body(seed: int = 0) -> nn.Module:
    """A random BERT body (no head, hidden 32), unlike conftest's tiny_bert classifier."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    with torch.random.fork_rng():  # deterministic init without touching the caller's RNG
        torch.manual_seed(seed)
        return BertModel(cfg)


def make_batches(n_batches: int = 4, batch: int = 16, seed: int = 0) -> list[dict]:
    """Right-padded batches; token 0 is a fixed [CLS]-like id, as in BERT inputs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(5, 100, (batch, 12), generator=g)
        ids[:, 0] = 1
        lengths = torch.randint(4, 13, (batch,), generator=g)
        mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
        out.append({"input_ids": ids * mask, "attention_mask": mask})
    return out


@pytest.fixture(scope="module")
def bert_and_states():
    model = tiny_bert_body()
    batches = make_batches()
    return model, batches, collect_hidden_states(model, batches, progress=False)


# -- collection -------------------------------------------------------------------------------


def test_collect_pools_every_layer(bert_and_states):
    model, batches, states = bert_and_states
    assert set(states) == {"cls", "mean"}
    assert [tuple(x.shape) for x in states["mean"]] == [(64, 32)] * 3  # embeddings + 2 layers
    model.eval()
    with torch.no_grad():
        hs = [model(**b, output_hidden_states=True).hidden_states for b in batches]
    for layer in range(3):
        cls = torch.cat([h[layer][:, 0] for h in hs])
        m = [b["attention_mask"][..., None].float() for b in batches]
        mean = torch.cat([(h[layer] * mk).sum(1) / mk.sum(1) for h, mk in zip(hs, m)])
        torch.testing.assert_close(states["cls"][layer], cls)
        torch.testing.assert_close(states["mean"][layer], mean)


def test_mean_pooling_ignores_padding():
    model = tiny_bert_body()
    ids = torch.tensor([[1, 17, 42, 9, 0, 0, 0], [1, 33, 8, 51, 77, 61, 5]])
    mask = (ids != 0).long()
    mask[:, 0] = 1
    padded = collect_hidden_states(
        model, [{"input_ids": ids, "attention_mask": mask}], "mean", progress=False
    )
    alone = collect_hidden_states(
        model, [{"input_ids": ids[:1, :4], "attention_mask": mask[:1, :4]}], "mean", progress=False
    )
    for p, a in zip(padded["mean"], alone["mean"]):
        torch.testing.assert_close(p[0], a[0], atol=1e-5, rtol=1e-5)


def test_collect_uses_eval_mode_and_restores_train_mode():
    model = tiny_bert_body()
    for mod in model.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.5
    model.train()
    model.pooler.eval()  # a submodule the caller keeps in eval mode stays so
    batches = make_batches(2)
    a = collect_hidden_states(model, batches, progress=False)
    b = collect_hidden_states(model, batches, progress=False)
    assert model.training and model.encoder.training and not model.pooler.training
    for x, y in zip(a["mean"], b["mean"]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)  # no dropout: eval mode


def test_collect_through_a_kwargs_wrapper(bert_and_states):
    model, batches, states = bert_and_states

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            return self.inner(**kwargs)

    wrapped = collect_hidden_states(Wrapper(model), batches, pooling=("mean",), progress=False)
    assert set(wrapped) == {"mean"}
    for x, y in zip(wrapped["mean"], states["mean"]):
        torch.testing.assert_close(x, y)


def test_collect_vision_feature_maps_by_global_average_pool():
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ResNetModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    batches = [{"pixel_values": torch.randn(6, 3, 32, 32, generator=g)} for _ in range(2)]
    states = collect_hidden_states(model, batches, pooling="mean", progress=False)
    with torch.no_grad():
        ref = [model(**b, output_hidden_states=True).hidden_states for b in batches]
    assert [tuple(x.shape) for x in states["mean"]] == [(12, 8), (12, 8), (12, 16)]
    for layer, x in enumerate(states["mean"]):
        torch.testing.assert_close(x, torch.cat([r[layer].mean(dim=(2, 3)) for r in ref]))
    with pytest.raises(ValueError, match="'cls' is undefined for a \\(B, C, H, W\\)"):
        collect_hidden_states(model, batches, pooling="cls", progress=False)


def test_collect_plain_module_through_hooks():
    g = torch.Generator().manual_seed(2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
    batches = [torch.randn(5, 6, generator=g) for _ in range(3)]
    states = collect_hidden_states(net, batches, module_names=["1", "2"], progress=False)
    x = torch.cat(batches)
    with torch.no_grad():
        h1 = torch.relu(net[0](x))
        torch.testing.assert_close(states["cls"][0], h1)  # (B, h) outputs are already pooled
        torch.testing.assert_close(states["mean"][1], net[2](h1))
    with pytest.raises(ValueError, match="not found"):
        collect_hidden_states(net, batches, module_names=["3"], progress=False)


def test_collect_hooks_on_token_states_use_the_mask(bert_and_states):
    model, batches, states = bert_and_states
    got = collect_hidden_states(
        model, batches, module_names=["encoder.layer.1"], pooling="mean", progress=False
    )
    torch.testing.assert_close(got["mean"][0], states["mean"][2])


def test_collect_refusals():
    model = tiny_bert_body()
    ids = torch.tensor([[0, 1, 7, 9], [1, 5, 6, 8]])
    left_padded = [{"input_ids": ids, "attention_mask": (ids != 0).long()}]
    with pytest.raises(ValueError, match="left-padded"):
        collect_hidden_states(model, left_padded, pooling="cls", progress=False)
    collect_hidden_states(model, left_padded, pooling="mean", progress=False)  # fine
    with pytest.raises(ValueError, match="pooling"):
        collect_hidden_states(model, left_padded, pooling="max", progress=False)
    with pytest.raises(ValueError, match="empty"):
        collect_hidden_states(model, [], progress=False)
    with pytest.raises(ValueError, match="dicts of tensors"):
        collect_hidden_states(model, [ids], progress=False)

    class Plain(nn.Module):
        def forward(self, x, **kwargs):
            return x

    with pytest.raises(ValueError, match="no hidden_states"):
        collect_hidden_states(Plain(), [{"x": torch.ones(2, 4)}], progress=False)


def test_tokenize_texts(minilm_tokenizer):
    texts = [f"sentence number {i} is {'very ' * (i % 5)}short" for i in range(10)]
    batches = tokenize_texts(minilm_tokenizer, texts, batch_size=4, max_length=8)
    assert len(batches) == 3
    first = list(batches)
    again = list(batches)  # re-iterable: base and tuned models can share it
    assert [b["input_ids"].shape[0] for b in first] == [4, 4, 2]
    assert all(b["input_ids"].shape[1] <= 8 for b in first)
    assert torch.equal(first[0]["input_ids"], again[0]["input_ids"])
    assert bool((first[0]["attention_mask"][:, 0] == 1).all())  # right padding
    assert first[0]["input_ids"][0, 0].item() == minilm_tokenizer.cls_token_id
    for bad in ({"texts": "one string"}, {"texts": []}, {"batch_size": 0}, {"max_length": -1}):
        kwargs = {"texts": texts, "batch_size": 4, "max_length": 8} | bad
        with pytest.raises(ValueError):
            tokenize_texts(minilm_tokenizer, **kwargs)


# -- report -----------------------------------------------------------------------------------


def test_report_of_a_model_against_itself(bert_and_states, tmp_path):
    _, _, states = bert_and_states
    facts = {"d": 1000, "D": 123456, "compression_ratio": np.float64(123.456), "mdl_bits": 32000}
    result = geometry_report(states, copy.deepcopy(states), tmp_path / "geo", facts, progress=False)
    out = tmp_path / "geo"
    pngs = [f"{m}.png" for m in METRICS] + ["linear_cka.png"]
    for name in pngs + ["geometry.json", "report.md"]:
        assert (out / name).is_file(), name
    for name in pngs:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob(".*.tmp"))

    saved = json.loads((out / "geometry.json").read_text())
    for pool in ("cls", "mean"):
        block = saved["poolings"][pool]
        assert block["layers"] == [0, 1, 2] and block["n_points"] == 64
        for m in METRICS:
            assert len(block["base"][m]) == 3
            assert block["base"][m] == block["tuned"][m] == result["poolings"][pool]["base"][m]
    # layer 0 CLS is the embedding of the same [CLS] token for every input: a constant vector
    assert saved["poolings"]["cls"]["base"]["rankme"][0] is None
    assert saved["poolings"]["cls"]["linear_cka"][0] is None
    assert any("cls/base/layer 0/rankme" in e and "constant" in e for e in saved["errors"])
    cka = saved["poolings"]["mean"]["linear_cka"] + saved["poolings"]["cls"]["linear_cka"][1:]
    assert cka == pytest.approx([1.0] * 5, abs=1e-9)
    assert 1 < saved["poolings"]["mean"]["base"]["rankme"][1] <= 32
    assert saved["facts"]["compression_ratio"] == pytest.approx(123.456)

    md = (out / "report.md").read_text()
    assert "## Pooling: cls" in md and "## Pooling: mean" in md
    assert "- **d**: 1000" in md and "- **compression_ratio**: 123.5" in md
    assert "![linear_cka](linear_cka.png)" in md
    assert md.count("\n| 2 |") == 2  # the last layer's row in both tables

    table = format_table(result)
    assert "pooling mean (N=64, base→tuned)" in table
    assert table.count("1.000") >= 5 and "d: 1000" in table


def test_report_sees_a_changed_model(bert_and_states, tmp_path):
    base_model, batches, base = bert_and_states
    tuned_model = copy.deepcopy(base_model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in tuned_model.encoder.layer[1].parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    tuned = collect_hidden_states(tuned_model, batches, progress=False)
    result = geometry_report(base, tuned, tmp_path, progress=False)
    block = result["poolings"]["mean"]
    # layers 0 and 1 are untouched by the change, layer 2 is not
    assert block["linear_cka"][:2] == pytest.approx([1.0, 1.0], abs=1e-9)
    assert block["linear_cka"][2] == pytest.approx(linear_cka(base["mean"][2], tuned["mean"][2]))
    assert block["linear_cka"][2] < 0.99
    assert block["base"]["rankme"][2] != pytest.approx(block["tuned"]["rankme"][2], rel=1e-6)


def test_report_base_only_and_small_n(tmp_path):
    rng = np.random.default_rng(0)
    states = {"mean": [rng.standard_normal((15, 24)), rng.standard_normal((15, 24))]}
    result = geometry_report(states, None, tmp_path, facts=None, progress=False)
    block = result["poolings"]["mean"]
    assert "tuned" not in block and "linear_cka" not in block
    assert not (tmp_path / "linear_cka.png").exists()
    assert block["base"]["mle"] == [None, None]  # 15 points < 21 for k = 20
    assert block["base"]["twonn"][0] is not None
    assert "mean/base/layer 1/mle: MLE with n_neighbors=20 needs at least 21" in result["errors"][1]
    assert json.loads((tmp_path / "geometry.json").read_text())["poolings"]["mean"]["base"][
        "mle"
    ] == [None, None]
    assert "(none given)" in (tmp_path / "report.md").read_text()
    assert "→" not in format_table(result)


def test_report_refuses_mismatched_states(tmp_path):
    rng = np.random.default_rng(0)
    base = {"mean": [rng.standard_normal((30, 8))] * 2}
    with pytest.raises(ValueError, match="N=30 inputs, tuned has N=31"):
        geometry_report(base, {"mean": [rng.standard_normal((31, 8))] * 2}, tmp_path)
    with pytest.raises(ValueError, match="poolings"):
        geometry_report(base, {"cls": base["mean"]}, tmp_path)
    with pytest.raises(ValueError, match="layers"):
        geometry_report(base, {"mean": base["mean"][:1]}, tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        geometry_report({"mean": [np.full((30, 8), np.nan)]}, None, tmp_path)
    assert not (tmp_path / "geometry.json").exists()
