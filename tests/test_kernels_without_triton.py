"""Where the triton package is not installed (macOS, Windows: it is a Linux-only dependency),
models still build and run on the reference kernels, and asking for the fused ones is a clear
SettingError, not a ModuleNotFoundError traceback.

The check runs in a subprocess whose meta-path finder refuses ``import triton`` (as a machine
without the package would), so this process's loaded triton does not hide anything."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = ("the fused kernels need the triton package, which is Linux-only; unset HYBRIDLAB_KERNELS "
           "or use reference")

SCRIPT = r'''
import os
import sys


class NoTriton:
    """A machine without triton: importing it, or any of its modules, fails."""
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTriton())
for name in [m for m in sys.modules if m.split(".")[0] == "triton"]:
    del sys.modules[name]
try:
    import triton  # noqa: F401
    sys.exit("the blocker let triton import")
except ModuleNotFoundError:
    pass

import torch

import hybridlab
from hybridlab.errors import SettingError
from hybridlab.kernels import dispatch

os.environ.pop("HYBRIDLAB_KERNELS", None)
x = torch.randint(0, 256, (2, 16))
models = {}
for name in ("mamba1-tiny", "mamba2-tiny", "mamba3-tiny", "mamba3-mimo-tiny", "jamba-tiny"):
    model = models[name] = hybridlab.build_model(hybridlab.load_spec(f"examples/{name}.yaml"))
    logits = model(x)
    assert logits.shape == (2, 16, 256) and torch.isfinite(logits).all(), name
    print("built and ran", name, flush=True)
assert not [m for m in sys.modules if m.split(".")[0] == "triton"], "triton got imported"
print("reference", dispatch.implementation("ssd", "reference").__module__)

os.environ["HYBRIDLAB_KERNELS"] = "triton"
for name in ("mamba1-tiny", "mamba3-tiny"):
    try:
        models[name](x)
        sys.exit(f"{name}: HYBRIDLAB_KERNELS=triton without triton ran")
    except SettingError as e:
        print("SettingError:", e, flush=True)
try:
    dispatch.implementation("selective_scan", "triton")
    sys.exit("the fused selective scan imported without triton")
except SettingError as e:
    print("SettingError:", e, flush=True)

# the CLI prints it in one line and exits 2
from hybridlab.cli.main import main  # noqa: E402
code = main(["train", "examples/mamba2-tiny.yaml", "--task", "mqar", "--steps", "1", "--device", "cpu"])
print("cli exit", code)
'''


def test_models_build_without_triton_and_asking_for_it_is_a_setting_error():
    env = {k: v for k, v in os.environ.items() if k not in ("HYBRIDLAB_KERNELS", "TRITON_INTERPRET")}
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for name in ("mamba1-tiny", "mamba2-tiny", "mamba3-tiny", "mamba3-mimo-tiny", "jamba-tiny"):
        assert f"built and ran {name}" in r.stdout, out
    assert "reference hybridlab.kernels.ops.ssd.reference" in r.stdout, out
    assert r.stdout.count(f"SettingError: {MESSAGE}") == 3, out
    assert "cli exit 2" in r.stdout, out
    assert f"hybridlab: {MESSAGE}" in r.stderr, out
    assert "Traceback" not in out and "ModuleNotFoundError" not in out, out
