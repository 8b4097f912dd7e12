"""The training loop under 🤗 Accelerate (one process, or many with ``accelerate launch``).

Shape of the loop (as Accelerate's ``examples/nlp_example.py``): ``Accelerator(mixed_precision,
gradient_accumulation_steps)`` → ``prepare`` the loaders, model, AdamW and a linear warm-up/decay
schedule → per batch ``accumulate`` / ``backward`` / ``step`` → evaluation with
``gather_for_metrics`` after every epoch. :func:`_train` reads that way: ``_start`` (refusals,
the Accelerator), ``_prepare`` (data, model, optimizer, schedule, resume), ``_train_epoch`` per
epoch (``_step`` per batch, ``_evaluate``, the saves due) until the last epoch or a stop
(``stop_reason``: ``"early-stop"`` or ``"stop-after-steps"``), then ``_finish`` (final score,
checkpoint, reload check, geometry report, hub).

Choices made here:

* Only trainable parameters reach AdamW. Weight decay applies to matrices and ``theta_d``, never
  to biases, norms or SAID's scales ``said_lambda`` (decaying a scale towards 0 would shrink the
  whole update). Under DDP the frozen θ₀ of an intrinsic model is never broadcast or reduced:
  the adapter lists it in ``_ddp_params_and_buffers_to_ignore``, which the
  ``DistributedDataParallel`` that ``accelerator.prepare`` builds honours.
* Randomness: the library never seeds torch's global RNG (dropout draws from it); the
  ``idcompress finetune`` command calls ``accelerate.utils.set_seed(seed)`` before
  :func:`train`. Data order comes from a per-epoch seeded generator (:mod:`.data`), head and
  projection from the counter-based generator.
* Evaluation runs in ``model.eval()`` under ``torch.no_grad`` (no dropout), so it is
  deterministic: the saved intrinsic checkpoint, reloaded with ``IntrinsicModel.from_pretrained``,
  must reproduce the final validation score exactly, and the run fails loudly if it does not.
* ``early_stop=P`` stops after P evaluations without improvement of the main metric and restores
  the best trainable parameters, so the checkpoint and the final score are the best epoch's.
* ``save_every=N`` saves the full training state every N optimizer steps (a save due on the
  last step of an epoch waits until that epoch's evaluation); ``resume`` continues from the
  newest state: optimizer, scheduler, RNG states, step counter and history are restored and the
  batches already seen in the interrupted epoch are skipped with
  ``accelerator.skip_first_batches``. The resumed run ends with the same ``theta_d`` as an
  uninterrupted one.
* ``stop_after_steps=N`` simulates an interruption after N optimizer steps (state saved, no
  checkpoint); the learning-rate schedule still spans all epochs.
* Text and image tasks share this loop; only the data (:func:`.data.load_data`: tokenised text,
  or images turned into ``pixel_values`` by the collate) and the model class differ. The loss is
  the model's own ``loss`` when its output has one; a model that returns bare logits (or an
  output without ``loss``) gets cross-entropy (MSE for regression) computed here.
* Reliability (:mod:`.lock`, :mod:`.checks`, :mod:`.state`, :mod:`.run_state`): the output folder is locked for
  the run's lifetime (a second run on it is refused; a stale lock is taken over) and temporary
  files of a killed run are removed; a folder holding a run needs ``--resume`` or
  ``--overwrite``; fp16 on CPU and a ``--max-length`` above the model's are refused before
  training; a non-finite loss stops the run at once without a checkpoint; a resumed state is
  verified file by file before it is loaded.
* BatchNorm under the intrinsic method: running statistics are buffers, outside seed + vector,
  so every layer that has them stays in eval mode during training (θ₀'s statistics, never
  updated; :func:`.methods.set_train_mode`). That is what lets the tiny checkpoint of a CNN
  such as EfficientNet-Lite0 reproduce the evaluated model exactly.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.size import tree_bytes
from ..data import TaskSpec, compute_metrics
from . import state as st
from . import tracking
from .checks import check_before_training, check_loss, check_mixed_precision
from .data import load_data, make_loaders
from .lm import evaluate_lm, is_generative, report_keys, report_pooling, write_samples
from .methods import BuiltModel, build_model, load_intrinsic, save_model, set_train_mode
from .options import FinetuneOptions
from .run_state import RunState
from .summary import RunResult, eval_line, initial_line

__all__ = ["RunResult", "compute_loss", "default_output_dir", "evaluate", "train"]


def default_output_dir(options: FinetuneOptions) -> Path:
    slug = (options.task or "custom").replace("/", "-")
    return Path("runs") / f"{slug}-{options.method}-{datetime.now():%Y%m%d-%H%M%S}"


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 or name.endswith("theta_d"):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _logits_and_loss(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, the model's own loss or None) of a model output or a bare logits tensor."""
    if isinstance(out, torch.Tensor):
        return out, None
    logits = getattr(out, "logits", None)
    if logits is None:
        raise ValueError(f"the model returned a {type(out).__name__} without logits")
    return logits, getattr(out, "loss", None)


def compute_loss(model: nn.Module, batch: dict[str, torch.Tensor], spec: TaskSpec) -> torch.Tensor:
    """The training loss of one batch (see the module docstring)."""
    logits, loss = _logits_and_loss(model(**batch))
    if loss is not None:
        return loss
    labels = batch["labels"]
    if spec.is_regression:
        return F.mse_loss(logits.float().reshape(labels.shape), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


@torch.no_grad()
def evaluate(model: nn.Module, loaders: dict, spec: TaskSpec, accelerator
             ) -> dict[str, dict[str, float]]:
    """Metrics of ``spec`` on every eval loader (gathered over processes, duplicates dropped)."""
    if is_generative(spec):
        return evaluate_lm(model, loaders, spec, accelerator)
    was_training = model.training
    model.eval()
    out = {}
    for split, loader in loaders.items():
        preds, labels = [], []
        for batch in loader:
            logits, _ = _logits_and_loss(model(**batch))
            p, y = accelerator.gather_for_metrics((logits, batch["labels"]))
            preds.append(p.float().cpu())
            labels.append(y.cpu())
        out[split] = compute_metrics(spec, torch.cat(preds).numpy(), torch.cat(labels).numpy())
    model.train(was_training)
    return out


@dataclass
class _Session:
    """What the pieces of one run share: the prepared objects and the run's bookkeeping."""

    options: FinetuneOptions
    accelerator: Any
    log_with: Any
    t0: float  # time.perf_counter() at the start
    data: Any  # .data.LoadedData
    built: BuiltModel
    model: nn.Module  # prepared (DDP-wrapped under several processes)
    optimizer: Any
    scheduler: Any
    train_dl: Any
    eval_dls: dict[str, Any]
    sampler: Any
    total_steps: int
    run: RunState
    result: RunResult
    steplog: tracking.StepLogger

    @property
    def spec(self) -> TaskSpec:
        return self.data.spec

    @property
    def out_dir(self) -> Path:
        return Path(self.options.output_dir)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def n_proc(self) -> int:
        return self.accelerator.num_processes

    @property
    def n_batches(self) -> int:
        return len(self.train_dl)


def train(options: FinetuneOptions, progress: bool = True) -> RunResult:
    """Fine-tune as ``options`` say; write metrics, state and checkpoint under the output dir.

    Every check of the input (output folder, data, ``--dim``) happens before the first step.
    The output folder is locked for the whole run (:mod:`.lock`).
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from .lock import run_lock

    options.validate()
    if not options.output_dir:
        options.output_dir = str(default_output_dir(options))
    # the Accelerator reads ACCELERATE_USE_CPU itself; PartialState does not, and it is shared:
    # created without cpu=True first, it would make a CPU `accelerate launch` one process per rank
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    check_mixed_precision(options, state.device)  # before any Accelerator exists
    is_main = state.is_main_process
    with run_lock(options.output_dir, is_main):
        if is_main and Path(options.output_dir).is_dir():
            removed = st.clean_run_temps(Path(options.output_dir))
            if removed:
                print(f"idcompress: removed {len(removed)} temporary file(s) left by an "
                      f"interrupted run in {options.output_dir}: "
                      + ", ".join(p.name for p in removed[:5]) + (" …" if len(removed) > 5 else ""))
        return _train(options, progress)


def _train(options: FinetuneOptions, progress: bool = True) -> RunResult:
    """The body of :func:`train`, run under the output folder's lock.

    Refusals, then Accelerate's objects (:func:`_prepare`); epochs with their evaluations and
    saves (:func:`_train_epoch`) until the last one or a stop; the checkpoint (:func:`_finish`).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    accelerator, log_with, resume_from = _start(options)
    t = _prepare(options, accelerator, log_with, resume_from, t0)
    run = t.run
    if is_generative(t.spec) and resume_from is None:  # the base's loss, to compare with
        _evaluate_base(t)

    bar = tqdm(total=t.total_steps, initial=run.global_step, desc="finetune", unit="step",
               disable=not (progress and accelerator.is_local_main_process), dynamic_ncols=True)
    stop_reason = "early-stop" if run.stopped_early else None  # None | "early-stop" | "stop-after-steps"
    start_epoch = run.completed_batches // t.n_batches
    t.steplog.start()
    for epoch in range(start_epoch, options.epochs):
        if stop_reason is not None:
            break
        stop_reason = _train_epoch(t, epoch, bar)
    bar.close()

    result = t.result
    result.steps, result.history = run.global_step, run.history
    result.epochs_done = min(options.epochs, run.completed_batches // t.n_batches)
    result.stopped_early = run.stopped_early
    result.best_epoch = run.best_epoch
    if stop_reason == "stop-after-steps":
        result.interrupted = True
        result.wall_time_s = time.perf_counter() - t0
        accelerator.print(f"stopped after {run.global_step} steps (--stop-after-steps); state "
                          f"saved in {st.latest_state(t.out_dir)}; continue with --resume")
        if log_with:
            accelerator.end_training()
        return result

    _finish(t)
    if log_with:
        accelerator.end_training()
    result.wall_time_s = time.perf_counter() - t0
    if t.is_main:
        st.write_json_atomic(t.out_dir / "metrics.json", result.to_dict())
    return result


# --- before the first step ---------------------------------------------------------------------
def _start(options: FinetuneOptions) -> tuple[Any, Any, Path | None]:
    """Every refusal that needs no data or model, and the Accelerator.

    ``(accelerator, log_with, resume_from)``: the trackers to log with, the state folder to
    resume from (verified) or ``None``.
    """
    from accelerate import Accelerator

    options.validate()
    log_with = tracking.log_with(options.report_to)  # a missing tracker package: refused now
    if options.push_to_hub:
        from ..sharing import check_can_push

        check_can_push(options.push_to_hub)  # offline or no token: refused before any work
    if options.early_stop is not None and not options.eval_every_epoch:
        raise ValueError("--early-stop needs an evaluation every epoch (eval_every_epoch: true)")
    out_dir = Path(options.output_dir) if options.output_dir else default_output_dir(options)
    options.output_dir = str(out_dir)
    accelerator = Accelerator(mixed_precision=options.mixed_precision,
                              gradient_accumulation_steps=options.grad_accum,
                              log_with=log_with, project_dir=str(out_dir))
    accelerator.print(f"processes: {accelerator.num_processes} (world size; device {accelerator.device}, "
                      f"batch {options.batch_size} per process)")
    st.check_output_dir(out_dir, options.resume, options.overwrite)
    resume_from = _resume_point(options, out_dir) if options.resume else None
    check_before_training(options, accelerator.device)
    accelerator.wait_for_everyone()
    return accelerator, log_with, resume_from


def _resume_point(options: FinetuneOptions, out_dir: Path) -> Path:
    """``--resume``: the newest saved state of ``out_dir``, its options and files checked."""
    resume_from = st.latest_state(out_dir)
    if resume_from is None:
        raise ValueError(f"--resume: no saved training state in {str(out_dir / st.STATE_DIR)!r}"
                         " (runs save it with --save-every N or when stopped early)")
    if not (out_dir / st.OPTIONS_FILE).is_file():
        raise ValueError(f"--resume: {str(out_dir / st.OPTIONS_FILE)!r} not found")
    saved = st.load_saved_options(out_dir / st.OPTIONS_FILE)
    st.check_resumable(saved, options.to_dict(), out_dir)
    st.verify_state(resume_from)  # every file, before anything is loaded
    return resume_from


def _prepare(options: FinetuneOptions, accelerator, log_with, resume_from: Path | None,
             t0: float) -> _Session:
    """Data, model, loaders, AdamW and the schedule, prepared; the run state (resumed if asked);
    the trackers started."""
    from transformers import get_linear_schedule_with_warmup

    is_main, out_dir = accelerator.is_main_process, Path(options.output_dir)
    with accelerator.main_process_first():
        data = load_data(options)
    spec = data.spec
    built: BuiltModel = build_model(options, spec, data.image_preprocessing)
    model = built.model
    result = RunResult(options=options, output_dir=out_dir, task=spec.name,
                       main_metric=spec.main_metric, method=built.method, d=built.d, D=built.D,
                       base_params=built.base_params,
                       trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
    if is_main and not options.resume:
        if options.overwrite:
            st.clear_previous_run(out_dir)  # every input checked: the old run goes now
        st.write_json_atomic(out_dir / st.OPTIONS_FILE, options.to_dict())

    train_dl, eval_dls, sampler = make_loaders(data.train, data.evals, data.collate,
                                               options.batch_size, options.seed)
    prepared = accelerator.prepare(train_dl, *eval_dls.values())
    train_dl, eval_dls = prepared[0], dict(zip(eval_dls, prepared[1:]))
    total_steps = math.ceil(len(train_dl) / options.grad_accum) * options.epochs
    optimizer = _optimizer(model, options.learning_rate, options.weight_decay)
    # the prepared scheduler steps once per process per optimizer step (Accelerate's convention)
    n_proc = accelerator.num_processes
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(options.warmup_ratio * total_steps) * n_proc,
        num_training_steps=total_steps * n_proc)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    load_kwargs = _save_only_trainable(accelerator, model) if built.method == "intrinsic" else {}
    run = RunState()
    if resume_from is not None:
        run = _resume(accelerator, resume_from, out_dir, load_kwargs)
    if log_with:
        accelerator.init_trackers(tracking.PROJECT_NAME,
                                  config=tracking.tracker_config(options.to_dict()))
    return _Session(options=options, accelerator=accelerator, log_with=log_with, t0=t0, data=data,
                    built=built, model=model, optimizer=optimizer, scheduler=scheduler,
                    train_dl=train_dl, eval_dls=eval_dls, sampler=sampler,
                    total_steps=total_steps, run=run, result=result,
                    steplog=tracking.StepLogger(accelerator, options.logging_steps, out_dir))


def _save_only_trainable(accelerator, model: nn.Module) -> dict[str, Any]:
    """Leave the frozen parameters out of every saved state; the ``load_state`` arguments.

    The saved state holds θ_d, λ and the buffers: the frozen parameters are the base's, not
    copied into every state folder (90 MB each for MiniLM).
    """
    frozen = {n for n, p in accelerator.unwrap_model(model).named_parameters(remove_duplicate=False)
              if not p.requires_grad}

    def only_trainable(models, weights, output_dir):
        for i, w in enumerate(weights):
            weights[i] = {k: v for k, v in w.items() if k not in frozen}

    accelerator.register_save_state_pre_hook(only_trainable)
    return {"strict": False}


def _resume(accelerator, resume_from: Path, out_dir: Path, load_kwargs: dict[str, Any]
            ) -> RunState:
    """Load the saved state into the prepared objects; the run state it holds."""
    try:
        accelerator.load_state(str(resume_from), **load_kwargs)
    except (OSError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"--resume: the saved state in {str(resume_from)!r} does not load: "
                         f"{type(e).__name__}: {e}") from None
    run = RunState.read(resume_from)
    if accelerator.is_main_process:  # an evaluation logged after this state was saved is logged again
        st.rewrite_history(out_dir / st.METRICS_LOG, run.history)
    accelerator.print(f"resumed from {resume_from} at step {run.global_step}")
    return run


# --- the epochs --------------------------------------------------------------------------------
def _train_epoch(t: _Session, epoch: int, bar) -> str | None:
    """One epoch (the rest of it, on resume), its evaluation and the saves due.

    The stop reason (``"stop-after-steps"``, ``"early-stop"``) or ``None`` to go on. A save or
    stop due on the epoch's last step waits until after its evaluation.
    """
    acc, options, run = t.accelerator, t.options, t.run
    skip = run.completed_batches - epoch * t.n_batches
    t.sampler.set_epoch(epoch)
    t.train_dl.set_epoch(epoch)
    loader = acc.skip_first_batches(t.train_dl, skip) if skip else t.train_dl
    if skip:
        loader.set_epoch(epoch)
    set_train_mode(t.model, t.built.method)  # intrinsic: BatchNorm statistics stay θ₀'s
    # the running loss of an interrupted epoch continues where it stopped (on process 0)
    loss_sum = torch.tensor(run.epoch_loss_sum if skip and t.is_main else 0.0, device=acc.device)
    loss_n = run.epoch_loss_count // t.n_proc if skip else 0
    due = None  # "save" / "stop" due on the last step of the epoch
    for i, batch in enumerate(loader, start=skip):
        loss, norm = _step(t, batch, epoch)
        loss_sum += loss.detach().float()
        loss_n += 1
        run.completed_batches += 1
        if not acc.sync_gradients:
            continue
        run.global_step += 1
        if t.steplog.due(run.global_step):
            t.steplog.on_step(run.global_step, t.scheduler.get_last_lr()[0], norm)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        due = _due(run, options)
        if i == t.n_batches - 1:
            break  # a save or stop due now waits for this epoch's evaluation
        if due is not None:
            _save_state(t, loss_sum, loss_n)
            if due == "stop":
                return "stop-after-steps"
            due = None
    train_loss = acc.reduce(loss_sum, "sum").item() / max(1, loss_n * t.n_proc)
    if options.eval_every_epoch or epoch == options.epochs - 1:
        _evaluate(t, epoch + 1, train_loss)
    loss_sum.zero_()
    stop_reason = None
    if due is not None:
        _save_state(t, loss_sum, 0)
        stop_reason = "stop-after-steps" if due == "stop" else None
    if run.stopped_early:
        acc.print(f"early stop: no improvement in {options.early_stop} evaluations")
        stop_reason = "early-stop"
    return stop_reason


def _step(t: _Session, batch: dict[str, torch.Tensor], epoch: int
          ) -> tuple[torch.Tensor, float | None]:
    """Forward and backward of one batch, the update at the end of an accumulation.

    ``(loss, gradient norm)``; the norm only when a ``--logging-steps`` record is due.
    """
    acc, run = t.accelerator, t.run
    norm = None
    with acc.accumulate(t.model):
        loss = compute_loss(t.model, batch, t.spec)
        check_loss(loss, run.global_step, epoch, t.options)
        acc.backward(loss)
        t.steplog.on_batch(batch, loss)
        if acc.sync_gradients and t.steplog.due(run.global_step + 1):
            norm = tracking.grad_norm(t.model)
        t.optimizer.step()
        t.scheduler.step()
        t.optimizer.zero_grad()
    return loss, norm


def _due(run: RunState, options: FinetuneOptions) -> str | None:
    """What the optimizer step just taken calls for: ``"stop"`` (``--stop-after-steps``: state
    saved, no checkpoint), ``"save"`` (``--save-every``) or ``None``."""
    if options.stop_after_steps is not None and run.global_step >= options.stop_after_steps:
        return "stop"
    if options.save_every and run.global_step % options.save_every == 0:
        return "save"
    return None


def _save_state(t: _Session, loss_sum: torch.Tensor, loss_n: int) -> Path:
    """Save the full training state (:mod:`.state`) at the current step; its folder."""
    acc, run = t.accelerator, t.run
    folder = st.state_folder(t.out_dir, run.global_step)
    run.epoch_loss_sum = acc.reduce(loss_sum.clone(), "sum").item()
    run.epoch_loss_count = loss_n * t.n_proc
    acc.save_state(str(folder))
    acc.wait_for_everyone()  # every process's files are in before they are listed
    if t.is_main:
        run.write(folder, t.out_dir)
    acc.wait_for_everyone()
    return folder


def _evaluate_base(t: _Session) -> None:
    """Generative tasks: the base's metrics before training (printed, ``initial_metrics.json``)."""
    t.result.initial_metrics = evaluate(t.model, t.eval_dls, t.spec, t.accelerator)
    t.accelerator.print(initial_line(t.result.initial_metrics[t.spec.eval_splits[0]]))
    if t.is_main:
        st.write_json_atomic(t.out_dir / "initial_metrics.json", t.result.initial_metrics)


def _evaluate(t: _Session, epoch: int, train_loss: float | None) -> None:
    """Evaluate after ``epoch`` (1-based): history, ``metrics.jsonl``, printed line, trackers,
    early-stop bookkeeping and, for a generative task, the samples."""
    acc, spec, run = t.accelerator, t.spec, t.run
    metrics = evaluate(t.model, t.eval_dls, spec, acc)
    score = metrics[spec.eval_splits[0]][spec.main_metric]
    entry = {"epoch": epoch, "step": run.global_step, "score": score, **metrics,
             "train_loss": train_loss, "lr": t.scheduler.get_last_lr()[0],
             "elapsed_s": round(time.perf_counter() - t.t0, 3)}
    run.note_eval(entry, spec, t.options.early_stop, acc.unwrap_model(t.model))
    if t.is_main:
        with open(t.out_dir / st.METRICS_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    acc.print(eval_line(epoch, run.global_step, spec.main_metric, score, metrics))
    if t.log_with:
        acc.log(tracking.eval_record(metrics, train_loss), step=run.global_step)
    if is_generative(spec) and t.data.samples and t.is_main:
        write_samples(acc.unwrap_model(t.model), t.data.tokenizer, spec, t.data.samples,
                      t.out_dir, epoch, t.options.max_new_tokens)


# --- after the last epoch ----------------------------------------------------------------------
def _finish(t: _Session) -> None:
    """The final score (best epoch's under early stopping; after ``--vector-dtype``'s cast), the
    checkpoint, its reload check, the geometry report and ``--push-to-hub``."""
    acc, options, spec, result, built = t.accelerator, t.options, t.spec, t.result, t.built
    unwrapped = acc.unwrap_model(t.model)
    final = t.run.final_entry(unwrapped, options.early_stop)
    result.metrics = {s: final[s] for s in spec.eval_splits}
    result.score = final["score"]

    expected = result.metrics
    if built.method == "intrinsic" and options.vector_dtype != "float32":
        from .cast import cast_vector

        cast_vector(unwrapped, options.vector_dtype)  # the model now holds what the file will
        with acc.autocast():
            expected = evaluate(unwrapped, t.eval_dls, spec, acc)
        result.score_float32 = result.score
        result.score = expected[spec.eval_splits[0]][spec.main_metric]
        result.metrics = {s: expected[s] for s in spec.eval_splits}
    ckpt = t.out_dir / st.CHECKPOINT_DIR
    if t.is_main:
        ckpt = save_model(unwrapped, built.method, ckpt, built.module_folder, t.data.tokenizer)
    acc.wait_for_everyone()
    result.checkpoint = ckpt
    result.checkpoint_bytes = tree_bytes(ckpt)

    if built.method == "intrinsic":
        reloaded = load_intrinsic(ckpt).to(acc.device)
        with acc.autocast():
            again = evaluate(reloaded, t.eval_dls, spec, acc)
        result.reload_score = again[spec.eval_splits[0]][spec.main_metric]
        if again != expected:
            raise RuntimeError(f"the saved checkpoint {ckpt} does not reproduce the final "
                               f"validation metrics: {again} != {result.metrics}")
        if not options.no_report and t.is_main:
            result.report = _geometry_report(reloaded, t.eval_dls[spec.eval_splits[0]], t)

    if options.push_to_hub and t.is_main:
        from ..sharing import push_checkpoint

        result.hub_url = push_checkpoint(ckpt, options.push_to_hub, run=result.to_dict())


def _geometry_report(model, loader, t: _Session) -> str | None:
    """The report of :func:`~idcompress.geometry.pipeline.report_after_training`, with the batch
    keys and poolings of the task's model kind."""
    from ..geometry.pipeline import REPORT_KEYS, report_after_training

    keys, pooling = REPORT_KEYS, None
    if is_generative(t.spec):  # causal: last real token + mean; seq2seq: encoder mean
        keys, pooling = report_keys(t.spec), report_pooling(t.spec)
    return report_after_training(model, loader, t.out_dir, t.result.checkpoint_bytes,
                                 keys=keys, pooling=pooling)
