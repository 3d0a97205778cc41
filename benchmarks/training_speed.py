"""Seconds per training step, the settings before the sample cache and mixed precision vs today's, in one run.

Usage:
  python benchmarks/training_speed.py --dataroot D --version V [--config config/train_tiny.yaml] [--steps 12]

"before": every item read from the dataset files (six JPEG decodes and the table walks per sample, what the
loader did before the cache), float32, contiguous (NCHW) tensors, 2 DataLoader workers (the old default);
"now": items from the training-resolution cache, the config's precision (bf16 on CPUs that have it) and
channels_last, the automatic worker count (0 on 2 cores). Both train the same student from the same seed on
the same split, alternating in blocks so that machine noise hits both alike; the ratio is what to read.
The first two steps of each setting are warm-up and not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from nuscenes.nuscenes import NuScenes

from training.config import load_train_config
from training.data import resolve_workers
from training.sample_cache import SampleCache, read_sample
from training.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 2


class DatasetReads(SampleCache):
    """A 'cache' that reads every sample from the dataset files on every request: the loader before the cache."""

    def ensure(self, sample_tokens: list[str], desc: str = "") -> int:
        return 0

    def load(self, sample_token: str):
        return read_sample(self.nusc, sample_token, self.image_width, self.map_grid, self._map_cache)


def step_times(trainer: Trainer, steps: int) -> list[float]:
    """Wall seconds of each step, data loading included (the loader's next() is part of the step)."""
    trainer.sampler.set_epoch(0)
    trainer.sampler.skip_batches = 0
    times: list[float] = []
    iterator = iter(trainer.loader(trainer.train_set, trainer.sampler))
    for _ in range(steps + WARMUP_STEPS):
        start = time.perf_counter()
        trainer.train_step(next(iterator))
        times.append(time.perf_counter() - start)
    return times[WARMUP_STEPS:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataroot", required=True)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "train_tiny.yaml")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting")
    args = parser.parse_args()

    base = load_train_config(args.config)
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    settings = {
        "before": dataclasses.replace(base, precision="fp32", channels_last=False, bn_recalibration_batches=0,
                                      data=dataclasses.replace(base.data, num_workers=2)),
        "now": dataclasses.replace(base, bn_recalibration_batches=0),
    }
    with tempfile.TemporaryDirectory() as out:
        trainers = {name: Trainer(config, "student", args.dataroot, args.version, Path(out) / name, nusc=nusc)
                    for name, config in settings.items()}
        before = trainers["before"].train_set
        before.cache = DatasetReads(Path(out) / "unused", nusc, before.cache.image_width, before.cache.grid)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        half = max(args.steps // 2, 1)
        for _ in range(2):  # before, now, before, now: drift of the machine shows in both
            for name, trainer in trainers.items():
                times[name] += step_times(trainer, half)
    print(f"training step of the {base.student_config} student, batch {base.data.batch_size}, "
          f"{len(times['now'])} timed steps per setting")
    for name, config in settings.items():
        t = times[name]
        print(f"  {name:6s} precision {config.precision:4s} channels_last {str(config.channels_last):5s} "
              f"workers {resolve_workers(config.data.num_workers)} data "
              f"{'dataset files' if name == 'before' else 'sample cache '}  "
              f"median {statistics.median(t):.3f} s/step  (min {min(t):.3f}, max {max(t):.3f})")
    ratio = statistics.median(times["before"]) / statistics.median(times["now"])
    print(f"speed-up now vs before: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
