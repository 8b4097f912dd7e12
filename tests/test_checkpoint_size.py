"""``idcompress.checkpoint.size``: the one home of checkpoint bytes, the fp32 baseline, the
compression ratio and MDL bits (used by ``info``, the run summary and the geometry facts)."""

import pytest

from idcompress.checkpoint.size import (
    bits_per_number,
    compression_ratio,
    fp32_bytes,
    mdl_bits,
    own_bytes,
    own_files,
    tree_bytes,
)


def _folder(tmp_path):
    ckpt = tmp_path / "checkpoint"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "adapter_config.json").write_bytes(b"x" * 10)
    (ckpt / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (ckpt / "tokenizer.json").write_bytes(b"x" * 1000)
    (ckpt / "sub" / "nested.bin").write_bytes(b"x" * 5)
    return ckpt


def test_tree_bytes_counts_every_file_recursively_and_own_bytes_only_the_checkpoints(tmp_path):
    ckpt = _folder(tmp_path)
    assert tree_bytes(ckpt) == 1115
    assert [f.name for f in own_files(ckpt)] == ["adapter_config.json", "adapter_model.safetensors"]
    assert own_bytes(ckpt) == 110
    single = tmp_path / "c.idc.safetensors"
    single.write_bytes(b"y" * 42)
    assert own_files(single) == [single]
    assert own_bytes(single) == tree_bytes(single) == 42


def test_ratio_bits_and_mdl():
    assert fp32_bytes(1000) == 4000
    assert compression_ratio(1000, 400) == pytest.approx(10.0)
    assert compression_ratio(1000, 0) is None and compression_ratio(1000, None) is None
    assert [bits_per_number(d) for d in ("float32", "float16", "bfloat16")] == [32, 16, 16]
    assert mdl_bits(300, "float16") == 4800
    with pytest.raises(KeyError):
        bits_per_number("int8")
