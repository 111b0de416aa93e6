"""Peak memory of one optimizer step above what stays resident, per precision policy (CPU).

    python benchmarks/step_memory.py                    # Adam, 16 tensors of 2**22, every config
    python benchmarks/step_memory.py -o lamb --tensors 16 --numel 4194304

The state a policy keeps between steps is one number (``precision.py`` reports it); the
working memory a step needs on top of it is another: an optimizer whose 8-bit state saves
6 B/param but whose step widens all of it to float32 at once peaks higher than the fp32
optimizer it replaces. Each configuration runs in a fresh process with glibc's
``MALLOC_MMAP_THRESHOLD_`` at 64 KiB, so that every tensor's memory is mapped on allocation
and returned to the system when freed; the step's peak is then the process's high-water mark
(``VmHWM``, reset before the step through ``/proc/self/clear_refs``) minus the resident size
before it. Linux only. Three steps run before the measured one (state created, compiled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

CONFIGS = {
    "fp32": {},
    "fp32+8bit": {"state_bits": 8},
    "fp32+bf16-state": {"state_dtype": "bfloat16"},
}
MODES = {"eager": {}, "compile": {"compile": True, "flat": False},
         "flat+compile": {"compile": True, "flat": True}}
WARMUP = int(os.environ.get("STEP_MEMORY_WARMUP", "3"))


def _status(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MiB
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(name: str, config: str, mode: str, tensors: int, numel: int) -> dict:
    """One configuration, in this process (run by :func:`main` in a child of its own)."""
    import optimkit

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(numel, generator=gen).requires_grad_() for _ in range(tensors)]
    for p in params:
        p.grad = 0.01 * torch.randn(numel, generator=gen)
    kwargs = {k: getattr(torch, v) if k == "state_dtype" else v
              for k, v in CONFIGS[config].items()}
    opt = optimkit.create(name, params, **kwargs, **MODES[mode])
    for _ in range(WARMUP):
        opt.step()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    opt.step()
    peak = _status("VmHWM") - before
    state = sum(t.numel() * t.element_size() for s in opt.state.values()
                for t in s.values() if isinstance(t, torch.Tensor))
    param_bytes = tensors * numel * 4
    return {"optimizer": name, "config": config, "mode": mode, "params_mib": param_bytes / 2**20,
            "state_mib": state / 2**20, "step_peak_mib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--optimizers", nargs="+", default=["adam"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--tensors", type=int, default=16)
    parser.add_argument("--numel", type=int, default=2**22)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child, args.tensors, args.numel)))
        return 0
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    print("| optimizer | configuration | mode | params MiB | state MiB | step peak above "
          "resident, MiB | x params |")
    print("|---|---|---|---|---|---|---|")
    for name in args.optimizers:
        for config in args.configs:
            for mode in args.modes:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", name, config, mode,
                     "--tensors", str(args.tensors), "--numel", str(args.numel)],
                    env=env, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"| {name} | {config} | {mode} | {row['params_mib']:.0f} "
                      f"| {row['state_mib']:.0f} | {row['step_peak_mib']:.0f} "
                      f"| {row['step_peak_mib'] / row['params_mib']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as out_file:
            json.dump(rows, out_file, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
