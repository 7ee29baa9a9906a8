"""Where a benchmark's time goes (`scripts/bench.py --profile N`): the top operators by CPU and
by GPU time, and the GPU's kernel time by kind of kernel, as a part of the JSONL record."""
from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(run_once, times: int, device, label: str) -> dict:
    """Where the time goes: the top operators by GPU time and by CPU time, and how busy the GPU
    was (a GPU idle between kernels means the CPU cannot launch them fast enough). Returns the
    record's part: wall and kernel ms per call by kind of kernel, and the GPU's busy share."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        start = time.time()
        for _ in range(times):
            run_once()
        synchronize(device)
        wall_us = (time.time() - start) * 1e6
    events = prof.key_averages()
    sorts = ["self_cpu_time_total"] + (["self_device_time_total"] if device.type == "cuda" else [])
    for sort in sorts:
        print(f"profile {label}: top by {sort}\n" + events.table(
            sort_by=sort, row_limit=15, max_name_column_width=60), flush=True)
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.is_user_annotation]  # an annotation spans kernels counted already
    by_category = {}
    for e in kernels:
        category = kernel_category(e.key)
        by_category[category] = by_category.get(category, 0) + e.self_device_time_total
    busy = sum(by_category.values()) / wall_us
    kernel_ms = {k: round(v / times / 1e3, 2) for k, v in
                 sorted(by_category.items(), key=lambda kv: -kv[1])}
    print(f"profile {label}: {wall_us / times / 1e3:.1f} ms per call, GPU busy {busy:.0%}; "
          "kernel ms per call: " + ", ".join(f"{k} {v:.1f}" for k, v in kernel_ms.items()))
    return {"profile_ms_per_call": round(wall_us / times / 1e3, 2),
            "profile_gpu_busy": round(busy, 3), "profile_kernel_ms": kernel_ms}


def kernel_category(name: str) -> str:
    """Which kind of work a GPU kernel does, from its name (cuBLAS, cuDNN and Triton names).
    Triton kernels are all elementwise here, even those named after the attention call whose
    inputs they lay out."""
    name = name.lower()
    if name.startswith("triton"):
        return "fused elementwise"
    if any(key in name for key in ("sdpa", "fmha", "flash", "attention")):
        return "attention"
    return "matmul/conv" if any(key in name for key in ("gemm", "nvjet", "xmma", "cutlass",
                                                         "conv")) else "other"
