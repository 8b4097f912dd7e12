"""The Hub: repo ids resolved from a hub cache offline, push_to_hub up to the network call, bad ids."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hub_constants

from idcompress import IntrinsicModel, save_checkpoint
from idcompress.checkpoint.hub import resolve_checkpoint
from idcompress.tuners.model import push_to_hub

SHA_MAIN, SHA_V1 = "a" * 40, "b" * 40


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def add_snapshot(cache: Path, repo_id: str, source: Path, sha: str, ref: str | None = "main") -> Path:
    """Lay ``source`` (a checkpoint dir or file) out as the hub cache does: snapshots/<sha>, refs/<ref>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    for f in ([source] if source.is_file() else sorted(source.iterdir())):
        shutil.copy(f, snap / f.name)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
    return snap


def test_repo_id_loads_offline_from_the_cache(make_tuned, logits, tmp_path, monkeypatch):
    main, v1 = make_tuned(seed=0), make_tuned(seed=1)
    main.save_pretrained(tmp_path / "main")  # PEFT's writer
    save_checkpoint(v1, tmp_path / "v1")  # idcompress's writer
    cache = tmp_path / "hub"
    snap = add_snapshot(cache, "owner/name", tmp_path / "main", SHA_MAIN)
    add_snapshot(cache, "owner/name", tmp_path / "v1", SHA_V1, ref="v1")
    assert resolve_checkpoint("owner/name", cache_dir=cache) == snap
    assert resolve_checkpoint("owner/name", revision=SHA_V1, cache_dir=cache).name == SHA_V1
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert torch.equal(logits(IntrinsicModel.from_pretrained("owner/name")), logits(main))
    assert torch.equal(logits(IntrinsicModel.from_pretrained("owner/name", revision="v1")), logits(v1))


def test_single_file_checkpoint_in_a_hub_snapshot(make_tuned, logits, tmp_path, monkeypatch):
    model = make_tuned()
    save_checkpoint(model, tmp_path / "model.idc.safetensors", single_file=True)
    cache = tmp_path / "hub"
    add_snapshot(cache, "owner/single", tmp_path / "model.idc.safetensors", SHA_MAIN)
    path = resolve_checkpoint("owner/single", cache_dir=cache)
    assert path.name == "model.idc.safetensors" and path.is_file()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert torch.equal(logits(IntrinsicModel.from_pretrained("owner/single")), logits(model))


def test_peft_loads_a_repo_id_from_the_cache(base_dir, make_tuned, logits, tmp_path):
    pytest.importorskip("peft")
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    import idcompress  # noqa: F401  (registers INTRINSIC with PEFT once peft is imported)

    model = make_tuned()
    model.save_pretrained(tmp_path / "ckpt")
    cache = tmp_path / "hub"
    add_snapshot(cache, "owner/peft", tmp_path / "ckpt", SHA_MAIN)
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    pm = PeftModel.from_pretrained(base, "owner/peft", cache_dir=str(cache))
    assert torch.equal(logits(pm), logits(model))


def test_missing_and_bad_repo_ids_are_clear(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    with pytest.raises(FileNotFoundError, match=r"owner/absent.*not in the hub cache"):
        resolve_checkpoint("owner/absent", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=r"revision 'v9'"):
        resolve_checkpoint("owner/absent", revision="v9", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=r"not a local path, nor a hub repo id 'owner/name'"):
        resolve_checkpoint("a/b/c", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=r"not a local path, nor a hub repo id"):
        resolve_checkpoint(str(tmp_path / "nothing"), cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=r"'owner/bad name' is not a valid hub repo id"):
        resolve_checkpoint("owner/bad name", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=r"owner/absent"):
        IntrinsicModel.from_pretrained("owner/absent")


class FakeApi:
    """Stands in for ``HfApi``: records calls, keeps a copy of the uploaded folder."""

    def __init__(self, store: Path, user: str = "someone"):
        self.store, self.user, self.calls = store, user, []

    def create_repo(self, repo_id, private=None, exist_ok=False, **kw):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        full = repo_id if "/" in repo_id else f"{self.user}/{repo_id}"
        return SimpleNamespace(repo_id=full)

    def upload_folder(self, repo_id, folder_path, commit_message=None, **kw):
        self.calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, self.store)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/123")


@pytest.mark.parametrize("single_file", [False, True])
def test_push_to_hub_uploads_a_loadable_checkpoint(make_tuned, logits, tmp_path, monkeypatch, single_file):
    fake = FakeApi(tmp_path / "uploaded")
    for name in ("create_repo", "upload_folder"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, getattr(fake, name))
    model = make_tuned()
    url = push_to_hub(model, "owner/name", private=True, single_file=single_file)
    assert url == "https://huggingface.co/owner/name/commit/123"
    assert fake.calls[0] == ("create_repo", "owner/name", True, True)
    assert fake.calls[1][:2] == ("upload_folder", "owner/name")
    files = sorted(p.name for p in (tmp_path / "uploaded").iterdir())
    if single_file:
        assert files == ["model.idc.safetensors"] and (tmp_path / "uploaded" / files[0]).is_file()
    else:
        assert files == ["adapter_config.json", "adapter_model.safetensors"]  # no model card
    reloaded = IntrinsicModel.from_pretrained(tmp_path / "uploaded")
    assert torch.equal(logits(reloaded), logits(model))


def test_push_to_hub_uses_the_created_repo_and_refuses_bad_ids(make_tuned, tmp_path, monkeypatch):
    fake = FakeApi(tmp_path / "uploaded", user="me")
    for name in ("create_repo", "upload_folder"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, getattr(fake, name))
    model = make_tuned()
    assert push_to_hub(model, "name").endswith("/me/name/commit/123")
    assert fake.calls[1][1] == "me/name"
    n = len(fake.calls)
    for bad in ("a/b/c", "owner/bad name", "owner/-x-"):
        with pytest.raises(ValueError, match="push_to_hub"):
            push_to_hub(model, bad)
    assert len(fake.calls) == n  # refused before any call to the hub
