"""The training loop under 🤗 Accelerate (one process, or many with ``accelerate launch``).

Shape of the loop (as Accelerate's ``examples/nlp_example.py``): ``Accelerator(mixed_precision,
gradient_accumulation_steps)`` → ``prepare`` the loaders, model, AdamW and a linear warm-up/decay
schedule → per batch ``accumulate`` / ``backward`` / ``step`` → evaluation with
``gather_for_metrics`` after every epoch.

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
* Reliability (:mod:`.lock`, :mod:`.checks`, :mod:`.state`): the output folder is locked for
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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import TaskSpec, compute_metrics
from . import state as st
from . import tracking
from .checks import check_before_training, check_loss, check_mixed_precision
from .data import load_data, make_loaders
from .lm import evaluate_lm, is_generative, report_keys, report_pooling, write_samples
from .methods import (
    BuiltModel,
    build_model,
    checkpoint_bytes,
    load_intrinsic,
    save_model,
    set_train_mode,
)
from .options import FinetuneOptions


@dataclass
class RunResult:
    """What a run produced. ``metrics`` maps each eval split to its metrics."""

    options: FinetuneOptions
    output_dir: Path
    task: str
    main_metric: str
    score: float | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    method: str = "intrinsic"
    d: int | None = None
    D: int | None = None
    trainable: int = 0
    base_params: int = 0
    checkpoint: Path | None = None
    checkpoint_bytes: int | None = None
    steps: int = 0
    epochs_done: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False
    reload_score: float | None = None
    report: str | None = None  # folder of the geometry report
    score_float32: float | None = None  # --vector-dtype: the score before the cast
    initial_metrics: dict[str, dict[str, float]] | None = None  # generative: before training
    hub_url: str | None = None  # --push-to-hub: the commit
    wall_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base_bytes_fp32(self) -> int:
        return 4 * self.base_params

    @property
    def compression_ratio(self) -> float | None:
        if not self.checkpoint_bytes:
            return None
        return self.base_bytes_fp32 / self.checkpoint_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "method": self.method, "main_metric": self.main_metric,
            "score": self.score, "metrics": self.metrics, "d": self.d, "D": self.D,
            "trainable_params": self.trainable, "base_params": self.base_params,
            "base_bytes_fp32": self.base_bytes_fp32,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "checkpoint_bytes": self.checkpoint_bytes,
            "compression_ratio": self.compression_ratio,
            "reload_score": self.reload_score, "report": self.report, "steps": self.steps,
            "score_float32": self.score_float32, "hub_url": self.hub_url,
            "initial_metrics": self.initial_metrics,
            "epochs_done": self.epochs_done, "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early, "interrupted": self.interrupted,
            "wall_time_s": self.wall_time_s, "options": self.options.to_dict(),
        }


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


def _trainable_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
            if p.requires_grad}


@torch.no_grad()
def _restore_snapshot(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for n, t in snapshot.items():
        params[n].copy_(t.to(params[n].device))


class _Run:
    """Mutable bookkeeping of one run (what ``trainer_state.json`` holds)."""

    def __init__(self) -> None:
        self.global_step = 0
        self.completed_batches = 0
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.bad_evals = 0
        self.best_snapshot: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        self.epoch_loss_sum = 0.0  # over all processes, batches of the current epoch so far
        self.epoch_loss_count = 0

    def to_json(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "completed_batches": self.completed_batches,
                "history": self.history, "best_score": self.best_score,
                "best_epoch": self.best_epoch, "bad_evals": self.bad_evals,
                "stopped_early": self.stopped_early, "epoch_loss_sum": self.epoch_loss_sum,
                "epoch_loss_count": self.epoch_loss_count}

    def load_json(self, data: dict[str, Any]) -> None:
        for k in ("global_step", "completed_batches", "history", "best_score", "best_epoch",
                  "bad_evals", "stopped_early", "epoch_loss_sum", "epoch_loss_count"):
            setattr(self, k, data[k])


_REPORT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
REPORT_MAX_INPUTS = 2000


def _better(score: float, best: float | None, spec) -> bool:
    """``score`` beats ``best`` (lower is better for a spec with ``greater_is_better=False``)."""
    if best is None:
        return True
    return score > best if getattr(spec, "greater_is_better", True) else score < best


def _geometry_report(model, eval_dl, out_dir: Path, result, spec=None) -> str | None:
    """The geometry report (base θ₀ vs tuned, per layer) on up to 2,000 validation inputs.

    Layers: a transformers base's ``hidden_states``; for other models the outputs of the
    submodules the base lists in ``report_module_names`` (e.g. EfficientNet-Lite0's blocks,
    feature maps mean-pooled over space), captured by forward hooks. Skipped, with a note, for
    a model with neither.
    """
    from transformers import PreTrainedModel

    from ..geometry import format_table
    from ..geometry.pipeline import checkpoint_facts, report_on_batches

    module_names = None
    keys, pool = _REPORT_KEYS, {}
    if is_generative(spec):  # causal: last real token + mean; seq2seq: encoder mean
        keys, pool = report_keys(spec), {"pooling": report_pooling(spec)}
    base = model.get_base_model()
    if not isinstance(base, PreTrainedModel):
        names = getattr(base, "report_module_names", None)
        if not names:
            print(f"geometry report skipped: {type(base).__name__} is not a "
                  "transformers model (no hidden_states) and lists no report_module_names")
            return None
        module_names = [f"base_model.model.{n}" for n in names]
    batches, n = [], 0
    for batch in eval_dl:
        b = {k: v for k, v in batch.items() if k in keys}
        batches.append(b)
        n += next(iter(b.values())).shape[0]
        if n >= REPORT_MAX_INPUTS:
            break
    try:
        res = report_on_batches(model, batches, out_dir / "geometry",
                                facts=checkpoint_facts(model, result.checkpoint_bytes),
                                module_names=module_names, **pool)
    except ValueError as e:  # e.g. too few validation inputs for the estimators
        print(f"geometry report skipped: {e}")
        return None
    print(format_table(res))
    return str(out_dir / "geometry")


def train(options: FinetuneOptions, progress: bool = True) -> RunResult:
    """Fine-tune as ``options`` say; write metrics, state and checkpoint under the output dir.

    Every check of the input (output folder, data, ``--dim``) happens before the first step.
    The output folder is locked for the whole run (:mod:`.lock`).
    """
    from accelerate import PartialState

    from .lock import run_lock

    options.validate()
    if not options.output_dir:
        options.output_dir = str(default_output_dir(options))
    state = PartialState()
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
    """The body of :func:`train`, run under the output folder's lock."""
    from accelerate import Accelerator
    from transformers import get_linear_schedule_with_warmup

    t0 = time.perf_counter()
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
    is_main = accelerator.is_main_process
    accelerator.print(f"processes: {accelerator.num_processes} (world size; device {accelerator.device}, "
                      f"batch {options.batch_size} per process)")
    st.check_output_dir(out_dir, options.resume, options.overwrite)
    resume_from = None
    if options.resume:
        resume_from = st.latest_state(out_dir)
        if resume_from is None:
            raise ValueError(f"--resume: no saved training state in {str(out_dir / st.STATE_DIR)!r}"
                             " (runs save it with --save-every N or when stopped early)")
        if not (out_dir / st.OPTIONS_FILE).is_file():
            raise ValueError(f"--resume: {str(out_dir / st.OPTIONS_FILE)!r} not found")
        saved = st.load_saved_options(out_dir / st.OPTIONS_FILE)
        st.check_resumable(saved, options.to_dict(), out_dir)
        st.verify_state(resume_from)  # every file, before anything is loaded
    check_before_training(options, accelerator.device)
    accelerator.wait_for_everyone()

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
    steps_per_epoch = math.ceil(len(train_dl) / options.grad_accum)
    total_steps = steps_per_epoch * options.epochs
    optimizer = _optimizer(model, options.learning_rate, options.weight_decay)
    # the prepared scheduler steps once per process per optimizer step (Accelerate's convention)
    n_proc = accelerator.num_processes
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(options.warmup_ratio * total_steps) * n_proc,
        num_training_steps=total_steps * n_proc)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    run = _Run()
    load_kwargs = {}
    if built.method == "intrinsic":
        # the saved state holds θ_d, λ and the buffers: the frozen parameters are the base's, not
        # copied into every state folder (90 MB each for MiniLM)
        frozen = {n for n, p in accelerator.unwrap_model(model).named_parameters(remove_duplicate=False)
                  if not p.requires_grad}

        def _only_trainable(models, weights, output_dir):
            for i, w in enumerate(weights):
                weights[i] = {k: v for k, v in w.items() if k not in frozen}

        accelerator.register_save_state_pre_hook(_only_trainable)
        load_kwargs = {"strict": False}
    if resume_from is not None:
        try:
            accelerator.load_state(str(resume_from), **load_kwargs)
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            raise ValueError(f"--resume: the saved state in {str(resume_from)!r} does not load: "
                             f"{type(e).__name__}: {e}") from None
        run.load_json(st.read_trainer_state(resume_from))
        if is_main:  # an evaluation logged after this state was saved is logged again below
            st.rewrite_history(out_dir / st.METRICS_LOG, run.history)
        if (resume_from / st.BEST_SNAPSHOT).is_file():
            from safetensors.torch import load_file

            run.best_snapshot = load_file(str(resume_from / st.BEST_SNAPSHOT))
        accelerator.print(f"resumed from {resume_from} at step {run.global_step}")

    log_path = out_dir / st.METRICS_LOG
    if log_with:
        accelerator.init_trackers(tracking.PROJECT_NAME,
                                  config=tracking.tracker_config(options.to_dict()))
    steplog = tracking.StepLogger(accelerator, options.logging_steps, out_dir)

    def save_state(loss_sum: torch.Tensor, loss_n: int) -> Path:
        folder = st.state_folder(out_dir, run.global_step)
        run.epoch_loss_sum = accelerator.reduce(loss_sum.clone(), "sum").item()
        run.epoch_loss_count = loss_n * n_proc
        accelerator.save_state(str(folder))
        accelerator.wait_for_everyone()  # every process's files are in before they are listed
        if is_main:
            if run.best_snapshot is not None:
                from safetensors.torch import save_file

                save_file(run.best_snapshot, str(folder / st.BEST_SNAPSHOT))
            st.write_trainer_state(folder, run.to_json())  # sizes + digests of the files
            st.prune_states(out_dir, folder)
        accelerator.wait_for_everyone()
        return folder

    def do_eval(epoch: int, train_loss: float | None) -> None:
        metrics = evaluate(model, eval_dls, spec, accelerator)
        score = metrics[spec.eval_splits[0]][spec.main_metric]
        entry = {"epoch": epoch, "step": run.global_step, "score": score, **metrics,
                 "train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                 "elapsed_s": round(time.perf_counter() - t0, 3)}
        run.history.append(entry)
        if _better(score, run.best_score, spec):
            run.best_score, run.best_epoch, run.bad_evals = score, epoch, 0
            if options.early_stop is not None:
                run.best_snapshot = _trainable_snapshot(accelerator.unwrap_model(model))
        else:
            run.bad_evals += 1
            if options.early_stop is not None and run.bad_evals >= options.early_stop:
                run.stopped_early = True
        if is_main:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        accelerator.print(f"epoch {epoch} step {run.global_step}: {spec.main_metric}={score:.4f} "
                          + " ".join(f"{s}/{k}={v:.4f}" for s, m in metrics.items()
                                     for k, v in m.items()))
        if log_with:
            accelerator.log(tracking.eval_record(metrics, train_loss), step=run.global_step)
        if is_generative(spec) and data.samples and is_main:
            write_samples(accelerator.unwrap_model(model), data.tokenizer, spec, data.samples,
                          out_dir, epoch, options.max_new_tokens)

    if is_generative(spec) and resume_from is None:  # the base's loss, to compare with
        result.initial_metrics = evaluate(model, eval_dls, spec, accelerator)
        first = result.initial_metrics[spec.eval_splits[0]]
        accelerator.print("before training: " + " ".join(f"{k}={v:.4f}" for k, v in first.items()))
        if is_main:
            st.write_json_atomic(out_dir / "initial_metrics.json", result.initial_metrics)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=run.global_step, desc="finetune", unit="step",
               disable=not (progress and accelerator.is_local_main_process), dynamic_ncols=True)
    n_batches = len(train_dl)
    start_epoch = run.completed_batches // n_batches
    interrupted = run.stopped_early
    norm = 0.0  # gradient norm of the step being logged (--logging-steps)
    steplog.start()
    for epoch in range(start_epoch, options.epochs):
        if interrupted:
            break
        skip = run.completed_batches - epoch * n_batches
        sampler.set_epoch(epoch)
        train_dl.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        if skip:
            loader.set_epoch(epoch)
        set_train_mode(model, built.method)  # intrinsic: BatchNorm statistics stay θ₀'s
        # the running loss of an interrupted epoch continues where it stopped (on process 0)
        loss_sum = torch.tensor(run.epoch_loss_sum if skip and is_main else 0.0,
                                device=accelerator.device)
        loss_n = run.epoch_loss_count // n_proc if skip else 0
        save_pending = stop_pending = False
        for i, batch in enumerate(loader, start=skip):
            with accelerator.accumulate(model):
                loss = compute_loss(model, batch, spec)
                check_loss(loss, run.global_step, epoch, options)
                accelerator.backward(loss)
                steplog.on_batch(batch, loss)
                if accelerator.sync_gradients and steplog.due(run.global_step + 1):
                    norm = tracking.grad_norm(model)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loss_sum += loss.detach().float()
            loss_n += 1
            run.completed_batches += 1
            if not accelerator.sync_gradients:
                continue
            run.global_step += 1
            if steplog.due(run.global_step):
                steplog.on_step(run.global_step, scheduler.get_last_lr()[0], norm)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            last_in_epoch = i == n_batches - 1
            save_pending |= bool(options.save_every and run.global_step % options.save_every == 0)
            stop_pending |= (options.stop_after_steps is not None
                             and run.global_step >= options.stop_after_steps)
            if last_in_epoch:
                break  # a save or stop due now waits for this epoch's evaluation
            if stop_pending:
                save_state(loss_sum, loss_n)
                interrupted = True
                break
            if save_pending:
                save_state(loss_sum, loss_n)
                save_pending = False
        if interrupted:
            break
        train_loss = accelerator.reduce(loss_sum, "sum").item() / max(1, loss_n * n_proc)
        if options.eval_every_epoch or epoch == options.epochs - 1:
            do_eval(epoch + 1, train_loss)
        loss_sum.zero_()
        loss_n = 0
        if stop_pending:
            save_state(loss_sum, loss_n)
            interrupted = True
        elif save_pending:
            save_state(loss_sum, loss_n)
        if run.stopped_early:
            accelerator.print(f"early stop: no improvement in {options.early_stop} evaluations")
            break
    bar.close()

    result.steps, result.history = run.global_step, run.history
    result.epochs_done = min(options.epochs, run.completed_batches // n_batches)
    result.stopped_early = run.stopped_early
    result.best_epoch = run.best_epoch
    if interrupted and not run.stopped_early:
        result.interrupted = True
        result.wall_time_s = time.perf_counter() - t0
        accelerator.print(f"stopped after {run.global_step} steps (--stop-after-steps); state "
                          f"saved in {st.latest_state(out_dir)}; continue with --resume")
        if log_with:
            accelerator.end_training()
        return result

    final = run.history[-1]
    if options.early_stop is not None and run.best_snapshot is not None \
            and run.best_epoch != final["epoch"]:
        _restore_snapshot(accelerator.unwrap_model(model), run.best_snapshot)
        final = next(h for h in run.history if h["epoch"] == run.best_epoch)
    result.metrics = {s: final[s] for s in spec.eval_splits}
    result.score = final["score"]

    unwrapped = accelerator.unwrap_model(model)
    expected = result.metrics
    if built.method == "intrinsic" and options.vector_dtype != "float32":
        from .cast import cast_vector

        cast_vector(unwrapped, options.vector_dtype)  # the model now holds what the file will
        with accelerator.autocast():
            expected = evaluate(unwrapped, eval_dls, spec, accelerator)
        result.score_float32 = result.score
        result.score = expected[spec.eval_splits[0]][spec.main_metric]
        result.metrics = {s: expected[s] for s in spec.eval_splits}
    ckpt = out_dir / st.CHECKPOINT_DIR
    if is_main:
        ckpt = save_model(unwrapped, built.method, ckpt, built.module_folder, data.tokenizer)
    accelerator.wait_for_everyone()
    result.checkpoint = ckpt
    result.checkpoint_bytes = checkpoint_bytes(ckpt)

    if built.method == "intrinsic":
        reloaded = load_intrinsic(ckpt).to(accelerator.device)
        with accelerator.autocast():
            again = evaluate(reloaded, eval_dls, spec, accelerator)
        result.reload_score = again[spec.eval_splits[0]][spec.main_metric]
        if again != expected:
            raise RuntimeError(f"the saved checkpoint {ckpt} does not reproduce the final "
                               f"validation metrics: {again} != {result.metrics}")

        if not options.no_report and is_main:
            result.report = _geometry_report(reloaded, eval_dls[spec.eval_splits[0]], out_dir,
                                             result, spec)

    if options.push_to_hub and is_main:
        from ..sharing import push_checkpoint

        result.hub_url = push_checkpoint(ckpt, options.push_to_hub, run=result.to_dict())
    if log_with:
        accelerator.end_training()
    result.wall_time_s = time.perf_counter() - t0
    if is_main:
        st.write_json_atomic(out_dir / "metrics.json", result.to_dict())
    return result

