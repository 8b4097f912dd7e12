"""`idcompress report CKPT`: base vs tuned geometry of a real checkpoint, end to end."""

import csv
import json

import torch

from idcompress import IntrinsicConfig, get_intrinsic_model
from idcompress.cli.main import main
from idcompress.models.loading import load_base_model


def test_report_cli_end_to_end(tmp_path, capsys):
    labels = ["negative", "positive"]
    base = load_base_model("minilm-l6", "SEQ_CLS", num_labels=2, label_names=labels)
    model = get_intrinsic_model(base, IntrinsicConfig(d=300, projection="said", base_model_name_or_path="minilm-l6",
                                                      task_type="SEQ_CLS", num_labels=2, label_names=labels))
    with torch.no_grad():
        model.theta_d.copy_(3 * torch.randn(model.theta_d.shape, generator=torch.Generator().manual_seed(0)))
    model.save_pretrained(tmp_path / "ckpt")
    with open(tmp_path / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for i in range(60):
            w.writerow([f"film {i} was {'great' if i % 2 else 'awful'} and {'fun' if i % 3 else 'long'}", i % 2])
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"d90": 123}))
    rc = main(["report", str(tmp_path / "ckpt"), "--validation-file", str(tmp_path / "val.csv"), "--n", "50",
               "--out", str(tmp_path / "geo"), "--measure-results", str(results)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "cka" in out and "compression_ratio" in out
    geo = json.loads((tmp_path / "geo" / "geometry.json").read_text())
    assert geo["facts"]["d"] == 300 and geo["facts"]["d90"] == 123 and geo["facts"]["mdl_bits"] == 300 * 32
    mean = geo["poolings"]["mean"]
    cka = mean["linear_cka"]
    assert len(cka) == 7 and all(0 < c <= 1 + 1e-9 for c in cka)
    assert min(cka) < 0.999  # the tuned model's representations moved away from the base's
    assert len(mean["base"]["rankme"]) == len(mean["tuned"]["rankme"]) == 7
    pngs = list((tmp_path / "geo").glob("*.png"))
    assert len(pngs) >= 6 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (tmp_path / "geo" / "report.md").read_text().count("|") > 20


def test_report_cli_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing"), "--n", "10"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
