"""``idcompress.training.run_state``: the run's bookkeeping, its early stopping and its files."""

from types import SimpleNamespace

import torch
from torch import nn

from idcompress.training import state as st
from idcompress.training.run_state import RunState


def _entry(epoch, score):
    return {"epoch": epoch, "step": 10 * epoch, "score": score}


def _model(value):
    m = nn.Linear(2, 1)
    m.bias.requires_grad_(False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_early_stop_counts_evaluations_without_improvement_and_restores_the_best():
    lower = SimpleNamespace(greater_is_better=False)
    run = RunState()
    model = _model(1.0)
    run.note_eval(_entry(1, 5.0), lower, early_stop=2, model=model)
    with torch.no_grad():
        model.weight.fill_(2.0)
    run.note_eval(_entry(2, 6.0), lower, early_stop=2, model=model)  # worse: lower is better
    assert (run.best_epoch, run.bad_evals, run.stopped_early) == (1, 1, False)
    run.note_eval(_entry(3, 5.0), lower, early_stop=2, model=model)  # a tie is no improvement
    assert (run.best_epoch, run.bad_evals, run.stopped_early) == (1, 2, True)
    final = run.final_entry(model, early_stop=2)
    assert final == _entry(1, 5.0)
    assert torch.equal(model.weight, torch.ones(1, 2))
    assert set(run.best_snapshot) == {"weight"}  # trainable parameters only


def test_without_early_stop_the_last_evaluation_is_final_and_nothing_is_snapshotted():
    run = RunState()
    model = _model(3.0)
    for epoch, score in ((1, 0.9), (2, 0.5)):
        run.note_eval(_entry(epoch, score), SimpleNamespace(), early_stop=None, model=model)
    assert run.best_epoch == 1 and run.best_snapshot is None and not run.stopped_early
    assert run.final_entry(model, early_stop=None) == _entry(2, 0.5)


def test_write_and_read_round_trip_with_the_best_snapshot(tmp_path):
    run = RunState()
    run.global_step, run.completed_batches, run.epoch_loss_sum = 7, 14, 1.5
    run.note_eval(_entry(1, 0.8), SimpleNamespace(), early_stop=3, model=_model(4.0))
    old = st.state_folder(tmp_path, 3)
    old.mkdir(parents=True)
    folder = st.state_folder(tmp_path, 7)
    folder.mkdir(parents=True)
    run.write(folder, tmp_path)
    assert not old.exists()  # older states pruned
    assert sorted(run.to_json()) == sorted(st.TRAINER_STATE_KEYS)
    st.verify_state(folder)  # the snapshot is listed in trainer_state.json
    back = RunState.read(folder)
    assert back.to_json() == run.to_json()
    assert torch.equal(back.best_snapshot["weight"], torch.full((1, 2), 4.0))
