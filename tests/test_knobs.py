"""Kernel tuning knobs from the environment: checked once, with errors that name the variable;
the CLI turns a bad setting into one line and exit code 2, not a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybridlab.errors import SettingError
from hybridlab.kernels import knobs

ROOT = Path(__file__).resolve().parents[1]


def test_int_knob(monkeypatch):
    monkeypatch.setenv("HYBRIDLAB_X", "32")
    assert knobs.env_int("HYBRIDLAB_X", 64, {16, 32, 64}) == 32
    monkeypatch.setenv("HYBRIDLAB_X", "")
    assert knobs.env_int("HYBRIDLAB_X", 64) == 64
    monkeypatch.setenv("HYBRIDLAB_X", "48")
    with pytest.raises(SettingError, match=r"HYBRIDLAB_X=48: expected one of \[16, 32, 64\]"):
        knobs.env_int("HYBRIDLAB_X", 64, {16, 32, 64})
    monkeypatch.setenv("HYBRIDLAB_X", "big")
    with pytest.raises(SettingError, match="HYBRIDLAB_X='big': expected an integer"):
        knobs.env_int("HYBRIDLAB_X", 64)


def test_choice_knob(monkeypatch):
    monkeypatch.setenv("HYBRIDLAB_Y", "Split")
    assert knobs.env_choice("HYBRIDLAB_Y", "fused", ("fused", "split")) == "split"
    monkeypatch.setenv("HYBRIDLAB_Y", "both")
    with pytest.raises(SettingError, match="HYBRIDLAB_Y='both': expected one of fused, split"):
        knobs.env_choice("HYBRIDLAB_Y", "fused", ("fused", "split"))


def test_cli_reports_a_bad_setting_without_a_traceback():
    env = dict(os.environ, HYBRIDLAB_KERNELS="triton", TRITON_INTERPRET="1", HYBRIDLAB_SSD_BLOCK_T="48")
    run = subprocess.run([sys.executable, "-m", "hybridlab.cli.main", "train", str(ROOT / "examples/mamba2-tiny.yaml"),
                          "--task", "parity", "--steps", "1", "--device", "cpu"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "HYBRIDLAB_SSD_BLOCK_T=48: expected one of [16, 32, 64]" in run.stderr
    assert "Traceback" not in run.stderr
