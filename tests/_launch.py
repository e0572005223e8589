"""Run a script (or ``-m module``) on 2 CPU processes under ``accelerate launch`` next to a 1-process
run, for the data-parallel tests (gloo; each process one thread)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict[str, str]:
    """This checkout first on the path, one thread per process, offline, no inherited world size."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def launch_two(target: list[str]) -> subprocess.Popen:
    """Start ``accelerate launch`` of 2 processes running ``target`` (a script path or ``-m module``
    plus its arguments); stdout and stderr together in ``.stdout``."""
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), *target,
    ]  # fmt: skip
    return subprocess.Popen(launch, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(p2: subprocess.Popen) -> str:
    """Wait for :func:`launch_two`; fail with its output unless it succeeded; return the output."""
    out = p2.communicate(timeout=300)[0].decode(errors="replace")
    assert p2.returncode == 0, out[-4000:]
    return out


def run_one_and_two(target_two: list[str], target_one: list[str]) -> str:
    """2 processes of ``target_two`` and a plain run of ``target_one`` side by side; fail with their
    output. Returns the 2-process output."""
    p2 = launch_two(target_two)
    p1 = subprocess.run([sys.executable, *target_one], env=launch_env(), capture_output=True, text=True, timeout=300)
    out2 = finish(p2)
    assert p1.returncode == 0, p1.stdout[-2000:] + p1.stderr[-4000:]
    return out2
