"""``transformers.Trainer`` trains an idcompress model with default arguments, writes the tiny
checkpoint at every save, and resumes exactly."""

import datasets
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from idcompress import IntrinsicConfig, IntrinsicModel, get_intrinsic_model

SENTENCES = ["a wonderful, moving film", "dull and far too long", "the best thing this year",
             "i hated every minute", "charming and funny", "a tedious mess", "brilliant acting",
             "boring plot, bad jokes"] * 4


@pytest.fixture(scope="module")
def dataset(minilm_path):
    tok = AutoTokenizer.from_pretrained(minilm_path)
    labels = [1, 0] * (len(SENTENCES) // 2)
    enc = tok(SENTENCES, padding="max_length", max_length=16, truncation=True)
    # "sentence" is not a forward argument: Trainer's default remove_unused_columns must drop it
    return datasets.Dataset.from_dict({"sentence": SENTENCES, "labels": labels, **enc})


def _model(minilm_path):
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    return get_intrinsic_model(base, IntrinsicConfig(d=500, task_type="SEQ_CLS", num_labels=2))


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True


def _args(out, **kw):
    # defaults everywhere except what a short CPU test needs (θ_d needs a larger lr than LoRA)
    return TrainingArguments(output_dir=str(out), learning_rate=0.5, max_steps=6, save_steps=2,
                             per_device_train_batch_size=8, logging_steps=1, report_to="none",
                             use_cpu=True, **kw)


def test_trainer_default_arguments_train_save_and_resume_exactly(tmp_path, dataset, minilm_path):
    model = _model(minilm_path)
    trainer = Trainer(model=model, args=_args(tmp_path / "a"), train_dataset=dataset, eval_dataset=dataset)
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    before = Trainer(model=_model(minilm_path), args=_args(tmp_path / "c"), eval_dataset=dataset).evaluate()["eval_loss"]
    assert after < before - 0.01
    full = model.theta_d.detach().clone()

    ckpt = tmp_path / "a" / "checkpoint-4"
    files = {p.name for p in ckpt.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert (ckpt / "adapter_model.safetensors").stat().st_size < 5_000
    reloaded = IntrinsicModel.from_pretrained(ckpt)  # base resolved from the recorded hub id, offline
    assert reloaded.intrinsic_config.d == 500
    trainer.save_model(str(tmp_path / "final"))
    final = IntrinsicModel.from_pretrained(tmp_path / "final")
    assert torch.equal(final.theta_d, full)

    # interrupted after 4 steps, then resumed from checkpoint-4 by a fresh process's objects
    t1 = Trainer(model=_model(minilm_path), args=_args(tmp_path / "b"), train_dataset=dataset,
                 callbacks=[_StopAt(4)])
    t1.train()
    resumed = _model(minilm_path)
    t2 = Trainer(model=resumed, args=_args(tmp_path / "b"), train_dataset=dataset)
    t2.train(resume_from_checkpoint=True)
    assert torch.equal(resumed.theta_d.detach(), full)
    assert torch.equal(resumed.said_lambda.detach(), model.said_lambda.detach())
