"""Turn a validated spec into objects and runs: what the command line does, in Python.

>>> from autoprune import _runner as runner, spec
>>> s = spec.validate({"model": "mlp", "data": "digits", "scheme": {"prune": {}}})
>>> data = runner.build_data(s)
>>> data.name
'digits'
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import time

import torch
from torch import nn

from . import objectives
from ._backends import resolve_device
from ._io import atomic_write
from .compress import CompressionResult, Compressor, Work
from .data import Data, load_data
from .errors import ConfigError
from .models import create_model, load_checkpoint
from .objectives import Maximize, Minimize
from .recovery import recoveries
from .schemes import Compose, schemes
from .spec import Spec, _metric_with_options, evaluation_options, sensitivity_options
from .training import evaluate, seed_everything, train

logger = logging.getLogger("autoprune")


def build_data(spec: Spec) -> Data:
    d = spec.resolved["data"]
    options = dict(d["options"])
    if d["name"] == "digits":
        options.setdefault("seed", d["seed"])
    return load_data(d["name"], **options)


def build_scheme(spec: Spec):
    ops = []
    for item in spec.resolved["scheme"]:
        ((name, options),) = item.items()
        options = {k: tuple(v) if k == "block" else v for k, v in options.items()}
        ops.append(schemes.get(name)(**options))
    return ops[0] if len(ops) == 1 else Compose(ops)


def build_objectives(spec: Spec) -> list:
    out = []
    for item in spec.resolved["objective"]:
        direction = "maximize" if "maximize" in item else "minimize"
        name = item[direction]
        options = {k: v for k, v in item.items() if k != direction}
        if ":" in name:
            from .registry import import_callable

            metric = objectives.FunctionMetric(import_callable(name, "objective"), name=name)
        elif options:
            metric = _metric_with_options("objective", name, options)
        else:
            metric = objectives.objective_registry.get(name)
        out.append(Maximize(metric) if direction == "maximize" else Minimize(metric))
    return out


def build_device(spec: Spec) -> torch.device:
    """The spec's ``device`` (``auto``: CUDA when present)."""
    return resolve_device(spec.resolved["device"])


def build_recovery(spec: Spec):
    ((name, options),) = spec.resolved["recovery"].items()
    return recoveries.get(name)(**options)


def _baseline_key(spec: Spec, data: Data) -> str:
    r = spec.resolved
    text = json.dumps(
        {"model": r["model"], "data": r["data"], "shape": data.input_shape},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def baseline_cache(spec: Spec, data: Data, out_dir: str) -> str:
    """Where the baseline the spec trains is cached in ``out_dir``."""
    return os.path.join(out_dir, f"baseline-{_baseline_key(spec, data)}.pt")


def build_model(spec: Spec, data: Data, out_dir: str, progress: bool = True) -> nn.Module:
    """The model: from a checkpoint, or trained as the spec says (cached in ``out_dir``)."""
    m = spec.resolved["model"]
    seed_everything(m["train"]["seed"])  # the same initial weights on every run
    model = create_model(m["name"], data.num_classes, data.input_shape, **m["options"])
    model.to(build_device(spec))
    if m.get("checkpoint"):
        load_checkpoint(model, m["checkpoint"])
        logger.info(f"model {m['name']}: weights from {m['checkpoint']}")
        return model.eval()
    cache = baseline_cache(spec, data, out_dir)
    if os.path.isfile(cache):
        load_checkpoint(model, cache)
        logger.info(f"model {m['name']}: baseline weights from the cache {cache}")
        return model.eval()
    t = m["train"]
    if t["epochs"] <= 0:
        raise ConfigError("model.checkpoint: give a checkpoint or model.train.epochs > 0")
    logger.info(f"model {m['name']}: training a baseline for {t['epochs']:g} epochs")
    loaders = data.loaders(
        batch_size=t["batch_size"],
        eval_batch_size=spec.resolved["data"]["eval_batch_size"],
        seed=t["seed"],
        pin_memory=build_device(spec).type == "cuda",
    )
    seed_everything(t["seed"])
    start = time.perf_counter()
    train(
        model,
        loaders.train,
        epochs=t["epochs"],
        lr=t["lr"],
        seed=t["seed"],
        progress=progress,
        desc="baseline",
    )
    acc = evaluate(model, loaders.val).accuracy
    logger.info(f"baseline trained in {time.perf_counter() - start:.0f} s: val accuracy {acc:.4f}")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write(cache, buf.getvalue())
    return model.eval()


def build_compressor(
    spec: Spec, model: nn.Module, data: Data, out_dir: str, progress: bool = True
) -> Compressor:
    r = spec.resolved
    s = r["search"]
    proxy, calibration = evaluation_options(s["evaluation"])
    return Compressor(
        model,
        build_objectives(spec),
        r["eps"],
        scheme=build_scheme(spec),
        data=data,
        recovery=build_recovery(spec),
        relative=r["relative"],
        n_trials=s["trials"],
        timeout=s["timeout"],
        trial_timeout=s["trial_timeout"],
        max_failures=s["max_failures"],
        sampler=s["sampler"],
        space=s["space"],
        prior=s.get("prior", "auto"),
        bounds=s["bounds"],
        proxy=proxy,
        calibration=calibration,
        sensitivity=sensitivity_options(r["sensitivity"]),
        seed=s["seed"],
        out_dir=out_dir,
        storage=s["storage"],
        study_name=s["study"],
        max_attempts=s["max_attempts"],
        refine=s["refine"],
        batch_size=r["data"]["batch_size"],
        eval_batch_size=r["data"]["eval_batch_size"],
        device=r["device"],
        progress=progress,
    )


class RunLog:
    """Send the ``autoprune`` logger to ``run.log`` (and to stderr unless quiet)."""

    def __init__(self, out_dir: str, quiet: bool, name: str = "run.log") -> None:
        os.makedirs(out_dir, exist_ok=True)
        self.handlers: list[logging.Handler] = [logging.FileHandler(os.path.join(out_dir, name))]
        self.handlers[0].setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        if not quiet:
            console = _TqdmHandler()
            console.setFormatter(logging.Formatter("%(message)s"))
            self.handlers.append(console)

    def __enter__(self) -> RunLog:
        logger.setLevel(logging.INFO)
        for h in self.handlers:
            logger.addHandler(h)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handlers:
            logger.removeHandler(h)
            h.close()


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def search(spec: Spec, out_dir: str, quiet: bool = False, workers: int = 1) -> CompressionResult:
    """Run a spec's whole job into ``out_dir``; returns the result (also saved there).

    Run the pre-flight (:func:`autoprune._preflight.preflight`) first, as the command line
    does, so that a fault in anything the spec names stops before any training. The
    directory is locked for the run
    (:class:`~autoprune._lock.RunLock`). Interrupted (Ctrl-C), the trials done so far are
    written to ``trials.csv`` and :class:`Interrupted` is raised.

    ``workers`` > 1 starts that many less one worker processes (:func:`work`) once the
    baseline is ready, each on its share of the CPU threads, to score trials of the same
    study beside this process, which alone prepares the search and finishes it.
    """
    from ._lock import RunLock

    with RunLock(out_dir), RunLog(out_dir, quiet):
        atomic_write(os.path.join(out_dir, "spec.yaml"), spec.to_yaml().encode())
        logger.info(f"autoprune search {spec.source or ''} -> {out_dir}")
        data = build_data(spec)
        logger.info(
            f"data {data.name}: {data.sizes()[0]} train, {data.sizes()[1]} val, "
            f"{data.sizes()[2]} test, input {data.input_shape}, {data.num_classes} classes"
        )
        model = build_model(spec, data, out_dir, progress=not quiet)
        compressor = build_compressor(spec, model, data, out_dir, progress=not quiet)
        helpers = _start_workers(spec, out_dir, workers)
        try:
            result = compressor.run()
        except KeyboardInterrupt:
            raise Interrupted(_save_trials_so_far(compressor, out_dir)) from None
        finally:
            _stop_workers(helpers)
        _outputs(spec, out_dir, result)
    return result


def _outputs(spec: Spec, out_dir: str, result: CompressionResult) -> None:
    """Beside a result this process made: the sensitivity analysis and the report (a result
    loaded from the process that finalized the study has them from that process)."""
    if result.directory is not None:
        return
    sens = result.settings.sensitivity
    if sens:
        atomic_write(os.path.join(out_dir, "sensitivity.json"), json.dumps(sens, indent=2).encode())
    if spec.resolved["output"]["report"]:
        from .report import build

        md, page = build(out_dir)
        logger.info(f"report: {page}")


def finalize(spec: Spec, out_dir: str, quiet: bool = False, force: bool = False):
    """Finalize the spec's prepared study as it stands (``autoprune finalize``): recover the
    finalists, measure, save the result and report into ``out_dir``; see
    :meth:`autoprune.Compressor.finalize`. Run the pre-flight first, as for :func:`search`."""
    from ._lock import RunLock

    with RunLock(out_dir), RunLog(out_dir, quiet):
        atomic_write(os.path.join(out_dir, "spec.yaml"), spec.to_yaml().encode())
        logger.info(f"autoprune finalize {spec.source or ''} -> {out_dir}")
        data = build_data(spec)
        model = build_model(spec, data, out_dir, progress=not quiet)
        compressor = build_compressor(spec, model, data, out_dir, progress=not quiet)
        try:
            result = compressor.finalize(force=force)
        except KeyboardInterrupt:
            raise Interrupted("finalize interrupted; run it again to finalize the study") from None
        _outputs(spec, out_dir, result)
    return result


def work(spec: Spec, out_dir: str, quiet: bool = False) -> Work:
    """Score trials of the study a coordinator (:func:`search` on the same storage and study)
    prepares; finalize it when this process is the first to claim that; returns what it did
    (:class:`~autoprune.compress.Work`).

    The baseline must be at hand: ``model.checkpoint``, or the coordinator's cached
    baseline in ``out_dir``. A worker logs to ``worker-<host>-<pid>.log`` and takes no lock.
    Run the pre-flight first, as for :func:`search`.
    """
    import socket

    name = f"worker-{socket.gethostname()}-{os.getpid()}.log"
    with RunLog(out_dir, quiet, name):
        data = build_data(spec)
        if not spec.resolved["model"].get("checkpoint") and not os.path.isfile(
            baseline_cache(spec, data, out_dir)
        ):
            raise ConfigError(
                "--worker: there is no trained baseline to score trials against; give "
                "model.checkpoint, or let the coordinator (autoprune search without --worker) "
                f"train it in {out_dir} first"
            )
        model = build_model(spec, data, out_dir, progress=False)
        compressor = build_compressor(spec, model, data, out_dir, progress=not quiet)
        try:
            done = compressor.work()
        except KeyboardInterrupt:
            raise Interrupted(
                "worker interrupted; the trials it completed are in the study"
            ) from None
        if done.result is not None:
            _outputs(spec, out_dir, done.result)
    return done


def _start_workers(spec: Spec, out_dir: str, workers: int) -> list:
    """``workers - 1`` worker processes on this machine, the CPU threads shared out."""
    import subprocess

    if workers <= 1:
        return []
    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    resolved = os.path.join(out_dir, "spec.yaml")  # every override applied, paths absolute
    cmd = [sys.executable, "-m", "autoprune", "search", resolved, "--out", out_dir, "--worker"]
    cmd += ["--quiet", "--threads", str(threads)]
    logger.info(f"workers: {workers - 1} more process(es), {threads} thread(s) each")
    return [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(workers - 1)]


def _stop_workers(helpers: list) -> None:
    """Wait for the workers (they end when the study's budget is complete), then stop any
    still running."""
    for proc in helpers:
        try:
            proc.wait(timeout=60)
        except Exception:
            proc.kill()
            proc.wait()


class Interrupted(KeyboardInterrupt):
    """A search stopped by Ctrl-C; the message says what was kept."""


def _save_trials_so_far(compressor: Compressor, out_dir: str) -> str:
    """Write the study's trials to ``trials.csv``; returns what the one line says."""
    import optuna

    from .compress.result import trials_csv
    from .compress.study import trial_row

    url = compressor.storage_url()
    if url is None:
        return "interrupted; the study was kept in memory only"
    try:
        study = optuna.load_study(study_name=compressor.study_name, storage=url)
    except Exception:  # nothing was stored yet: interrupted before the study opened
        return f"interrupted before the search started; nothing to keep in {out_dir}"
    rows = [trial_row(t) for t in study.trials]
    atomic_write(os.path.join(out_dir, "trials.csv"), trials_csv(rows))
    done = sum(r["state"] == "complete" for r in rows)
    return (
        f"interrupted after {done} complete trial(s), kept in {out_dir}/trials.csv and the "
        "study; run the same command again to resume"
    )
