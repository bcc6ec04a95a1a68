"""The arena TFLite-Micro's greedy memory planner would lay out for a model's operators, in Python.

kdq_tf.device.fuse sizes the fused LUT convolutions' scratch with it: the Python interpreter
cannot load the fused model, and a plain sum of one layer's tensors misses how the planner packs
them. Measured on small_cnn, scratch groups that fit beside each layer's own tensors still grew
the Cortex-M4 arena by 3.6 KB, because the planner places buffers largest first and a large
scratch buffer displaced the activations around it.

This follows `GreedyMemoryPlanner` and `AllocationInfoBuilder` (tflite-micro's
memory_planner/greedy_memory_planner.cc and micro_allocation_info.cc): a tensor lives from the
operator that writes it (graph inputs from the start) to the last operator that reads it (graph
outputs to the end), a scratch buffer for its operator only; buffers are 16-byte aligned, sorted
by size (largest first, ties in the order added: tensors by index, then scratch by operator), and
each goes into the lowest gap between the buffers that live at the same time. Kernels' own
scratch requests are the caller's estimate, so the result is an estimate of the arena's planned
part (not its persistent tail), good for comparing two plans of one model.
"""

from dataclasses import dataclass

ALIGNMENT = 16  # MicroArenaBufferAlignment()


@dataclass(frozen=True)
class Buffer:
    size: int
    first: int
    last: int


def buffers(
    ops: list[dict],
    graph_inputs: list[int],
    graph_outputs: list[int],
    skip: set[int] = frozenset(),
    scratch: dict[int, list[int]] | None = None,
) -> list[Buffer]:
    """The planner's buffers for `ops` (`flatbuf.operators` dicts, in execution order): every
    tensor without data in the flatbuffer but those in `skip`, then `scratch[i]` (bytes per
    request) of operator i, in that order."""
    scratch = scratch or {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    size: dict[int, int] = {}
    for t in graph_inputs:
        first[t] = last[t] = 0
    for n, o in enumerate(ops, start=1):
        for t in o["outputs"]:
            first.setdefault(t["index"], n)
        for t in o["inputs"] + o["outputs"]:
            if not t["constant"] and t["index"] not in skip:
                last[t["index"]] = n
                size[t["index"]] = t["bytes"]
    for t in graph_outputs:
        first.setdefault(t, len(ops))
        last[t] = len(ops)
    out = [Buffer(_aligned(size[t]), first.get(t, 0), last[t]) for t in sorted(size) if size[t] > 0]
    for n, o in enumerate(ops, start=1):
        out += [Buffer(_aligned(b), n, n) for b in scratch.get(n - 1, []) if b > 0]
    return out


def head_size(bufs: list[Buffer]) -> int:
    """The bytes the greedy planner needs for `bufs`: the end of the highest buffer placed."""
    placed: list[tuple[int, Buffer]] = []  # (offset, buffer), in offset order
    top = 0
    for b in sorted(bufs, key=lambda b: -b.size):  # stable, as the planner's bubble sort
        offset = 0
        for o, p in placed:
            if p.first > b.last or b.first > p.last:
                continue  # not alive at the same time
            if o - offset >= b.size:
                break  # the gap before this one holds it
            offset = max(offset, o + p.size)
        placed.append((offset, b))
        placed.sort(key=lambda e: e[0])
        top = max(top, offset + b.size)
    return top


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT
