"""`tinybev distill-probe`: what each distillation term does to the student's gradient, measured in minutes
instead of guessed from a 40-minute run.

For a few training batches of a distillation setup (its YAML, its teacher, a fresh student or a checkpoint), the
gradient of every weighted term on the student's parameters is compared with the ground truth's:
- its norm relative to the supervised gradient's: a term 10x larger steers the step, and under gradient clipping
  it also shrinks the supervised part of the step;
- its cosine with the supervised gradient: near 0, the term teaches something the labels do not (or is noise);
  negative, it pulls against the labels.
Per part of the student (camera = backbone + view transform, encoder, heads) and overall, averaged over the
batches. The per-term gradients add up to the total's (checked and reported: `sum_error`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tinybev_ros.arguments import positive_int
from tinybev_ros.device import resolve_device
from tinybev_ros.precision import autocast_dtype
from training.data import move_batch
from training.distill import DistillTrainer
from training.distillation.config import STAGES, load_distill_config
from training.evaluation.report import write_json
from training.train import add_override_arguments, overrides_of


def parameter_parts(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Trainable parameters by top-level child of the student (camera, encoder, heads)."""
    parts: dict[str, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            parts.setdefault(name.split(".")[0], []).append(parameter)
    return parts


def weighted_terms(trainer: DistillTrainer, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The summands of the total loss: the supervised one and each weighted distillation term."""
    out = {"supervised": trainer.distill.supervised * terms["supervised"]}
    for name, weight in trainer.kd_weights().items():
        if f"kd_{name}" in terms:
            out[name] = weight * terms[f"kd_{name}"]
    return out


def _flat(grads: tuple[torch.Tensor | None, ...], parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).float().reshape(-1)
                      for g, p in zip(grads, parameters, strict=True)])


def probe_batch(trainer: DistillTrainer, batch: dict[str, Any]) -> dict[str, Any]:
    """One batch: per term, its value and per part its gradient norm and cosine with the supervised gradient."""
    parts = parameter_parts(trainer.model)
    everything = [p for group in parts.values() for p in group]
    trainer.wrapped.train()
    terms = trainer.losses(move_batch(batch, trainer.device))
    summands = weighted_terms(trainer, terms)
    grads = {name: _flat(torch.autograd.grad(loss, everything, retain_graph=True, allow_unused=True), everything)
             for name, loss in summands.items()}
    total = _flat(torch.autograd.grad(terms["total"], everything, allow_unused=True), everything)
    spans, start = {}, 0
    for part, parameters in parts.items():
        size = sum(p.numel() for p in parameters)
        spans[part] = slice(start, start + size)
        start += size
    spans["all"] = slice(0, start)
    rows: dict[str, Any] = {}
    for name, grad in grads.items():
        row: dict[str, Any] = {"value": float(summands[name].detach())}
        for part, span in spans.items():
            g, s = grad[span].double(), grads["supervised"][span].double()  # float32 sums drift over 10M cells
            norm, reference = float(g.norm()), float(s.norm())
            row[part] = {"norm": norm, "ratio": norm / reference if reference > 0 else math.nan,
                         "cosine": min(1.0, max(-1.0, float(torch.dot(g, s)) / (norm * reference)))
                         if norm and reference else math.nan}
        rows[name] = row
    summed = torch.stack(list(grads.values())).sum(0)
    return {"terms": rows, "sum_error": float((summed - total).norm() / total.norm().clamp(min=1e-12))}


def average(probes: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every figure over the batches (NaN-aware)."""
    def mean(values: list[float]) -> float:
        finite = [v for v in values if not math.isnan(v)]
        return sum(finite) / len(finite) if finite else math.nan

    first = probes[0]["terms"]
    terms = {name: {key: (mean([p["terms"][name][key] for p in probes]) if key == "value" else
                          {k: mean([p["terms"][name][key][k] for p in probes]) for k in value})
                    for key, value in row.items()}
             for name, row in first.items()}
    return {"batches": len(probes), "terms": terms, "sum_error": max(p["sum_error"] for p in probes)}


def _figure(value: float | None, spec: str) -> str:
    """n/a where there is nothing to compare (a term without gradient there; NaN is null once saved as JSON)."""
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def render(result: dict[str, Any]) -> str:
    parts = [key for key in next(iter(result["terms"].values())) if key != "value"]
    header = "| term | weighted value | " + " | ".join(f"{p}: norm ratio, cos" for p in parts) + " |"
    lines = [header, "|" + "---|" * (2 + len(parts))]
    for name, row in result["terms"].items():
        cells = [f"{_figure(row[p]['ratio'], '.2f')}, {_figure(row[p]['cosine'], '+.2f')}" for p in parts]
        lines.append(f"| {name} | {row['value']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\n(mean over {result['batches']} batches; norm ratio = the term's gradient norm / "
                               f"the supervised one's; per-term gradients add up to the total's within "
                               f"{result['sum_error']:.1e})\n")


# ------------------------------------------------------------------------------------------ command line
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="distillation YAML (config/distill_tiny.yaml)")
    parser.add_argument("--teacher", required=True, help="teacher checkpoint or teacher-cache directory")
    parser.add_argument("--stage", choices=[s for s in STAGES if s != "none"], default="S3")
    parser.add_argument("--student", default=None, help="student checkpoint to probe (default: a fresh student)")
    parser.add_argument("--step", type=int, default=0, help="training step the loss ramps are taken at")
    parser.add_argument("--batches", type=positive_int, default=8, help="training batches to average over")
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")
    parser.add_argument("--device", default=None)
    add_override_arguments(parser)  # a candidate recipe is probed without writing its YAML


def training_batches(trainer: DistillTrainer) -> Iterator[dict[str, Any]]:
    """The training loader's batches, epoch after epoch (a small split has fewer batches than asked for)."""
    while True:
        yield from trainer.loader(trainer.train_set, trainer.sampler)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = overrides_of(args)
    run_config = load_distill_config(args.config, [*overrides, f"distill.stage={args.stage}"])
    config = run_config.training()
    if autocast_dtype(config.precision, resolve_device(args.device)) == torch.float16:
        # training scales float16 losses (GradScaler) before their gradients; the probe's per-term gradients are
        # not scaled, and would underflow (the small distillation terms' first): taken in float32 instead
        config = dataclasses.replace(config, precision="fp32")
    with tempfile.TemporaryDirectory() as scratch:  # the trainer wants a run folder; the probe saves nothing
        trainer = DistillTrainer(config, run_config.distill, args.teacher, args.dataroot, args.version, scratch,
                                 device=args.device)
        if args.student:
            trainer.spec.load_weights(trainer.model, Path(args.student), trainer.device)
        trainer.step = args.step
        probes = [probe_batch(trainer, batch) for batch in itertools.islice(training_batches(trainer), args.batches)]
        compute = str(trainer.compute_dtype or torch.float32).removeprefix("torch.")
    result = {"config": str(args.config), "overrides": overrides, "stage": args.stage,
              "student": args.student or "fresh", "step": args.step, "compute_dtype": compute, **average(probes)}
    print(render(result))
    if args.out:
        write_json(Path(args.out), result)
    return 0

