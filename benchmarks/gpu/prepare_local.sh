#!/usr/bin/env bash
# Run where PyPI is reachable, from anywhere inside the repo. Fills the two git-ignored folders the
# GPU machine needs beside the working tree (it has no internet):
#   .peer/  the mamba-ssm 2.3.2.post1 source (the peer we time against; never committed)
#   .whl/   wheels a bare GPU image lacks (optuna & co; Python 3.12, manylinux x86-64)
# Cache-aware: a folder already filled is left alone (FORCE=1 refetches). The two together must
# stay under LIMIT_MIB (default 60), what the GPU machine takes beside the working tree.
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
PEER_VERSION=2.3.2.post1
peer_dir=.peer/mamba_ssm-$PEER_VERSION
limit_mib=${LIMIT_MIB:-60}

if [[ -d $peer_dir/mamba_ssm && -d $peer_dir/csrc/selective_scan && -z ${FORCE:-} ]]; then
  echo "peer: $peer_dir already there"
else
  rm -rf "$peer_dir" && mkdir -p .peer
  tmp=$(mktemp -d)
  # The sdist's setup.py imports torch to build metadata; skip its CUDA build (none here anyway).
  MAMBA_SKIP_CUDA_BUILD=TRUE python3 -m pip download -q --no-deps --no-binary :all: \
    --no-build-isolation "mamba-ssm==$PEER_VERSION" -d "$tmp"
  tar -xzf "$tmp"/mamba_ssm-"$PEER_VERSION".tar.gz -C .peer
  rm -rf "$tmp"
  # Only the Python package and the Mamba-1 CUDA sources are used on the GPU machine.
  rm -rf "$peer_dir"/tests "$peer_dir"/mamba_ssm.egg-info
  echo "peer: unpacked into $peer_dir"
fi

if compgen -G ".whl/optuna-*.whl" >/dev/null && compgen -G ".whl/plotly-*.whl" >/dev/null && [[ -z ${FORCE:-} ]]; then
  echo "wheels: .whl already filled"
else
  # torch, triton and tqdm come with the GPU image; these are the rest of hybridlab's imports
  mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl optuna alembic mako sqlalchemy greenlet colorlog plotly
  echo "wheels: downloaded into .whl"
fi

peer_kib=$(du -sk .peer | cut -f1)
whl_kib=$(du -sk .whl | cut -f1)
total_mib=$(( (peer_kib + whl_kib) / 1024 ))
echo "sizes: .peer ${peer_kib} KiB, .whl ${whl_kib} KiB, together ${total_mib} MiB (limit ${limit_mib} MiB)"
if (( total_mib >= limit_mib )); then
  echo "error: .peer + .whl exceed ${limit_mib} MiB (LIMIT_MIB)" >&2
  exit 1
fi
