"""One run per output folder (training/run_lock.py), with real processes: a second run is refused in one line, and a
holder killed with SIGKILL leaves nothing that blocks the resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinybev_ros.errors import ConfigError
from training.run_lock import run_lock

REPO = Path(__file__).resolve().parent.parent
HOLD = "import sys, time\nfrom training.run_lock import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    time.sleep(120)\n"


def test_a_second_run_into_a_held_folder_is_refused_and_a_killed_holder_blocks_nothing(synth_dataset, tmp_path,
                                                                                      capsys):
    """Two `tinybev train` into one --out mixed their checkpoints, and one's write removed the other's temp folder."""
    from tinybev_ros.cli import main

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = f"--out {folder} is in use by a run still going \\(pid {holder.pid}\\)"
        with pytest.raises(ConfigError, match=refused), run_lock(folder):
            pass
        raw = yaml.safe_load((REPO / "config" / "train_tiny.yaml").read_text())
        raw.update(student_config=str(REPO / "config" / "model_tiny.yaml"))
        raw["data"].update(batch_size=1, num_workers=0, max_samples=2)
        config = tmp_path / "train.yaml"
        config.write_text(yaml.safe_dump(raw))
        args = ["train", "--config", str(config), "--model", "student", "--dataroot", str(synth_dataset.dataroot),
                "--version", synth_dataset.version, "--out", str(folder), "--steps", "1"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by a run still going" in err[0], err
        assert not (folder / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    with run_lock(folder):  # the kernel dropped the killed holder's lock
        assert (folder / ".lock").read_text() == f"pid {os.getpid()}\n"
