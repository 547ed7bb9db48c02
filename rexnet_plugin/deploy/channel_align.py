"""Zero-pad ReXNet's expanded channels (162, 228, ...) to a multiple of 16, where ONNX
Runtime's depthwise conv is fast; outputs unchanged (docs/deployment.md says why)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

ALIGN = 16  # AVX-512: 16 int32 / fp32 lanes
_PASS_THROUGH = ("Sigmoid", "Relu", "Clip", "HardSigmoid", "HardSwish", "GlobalAveragePool")


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def align_channels(model, align: int = ALIGN) -> tuple[object, list[tuple[int, int]]]:
    """Pad ``model`` (BatchNorm folded; changed in place) -> (model, [(old, new) channels])."""
    from onnx import numpy_helper
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    outputs = {o.name for o in graph.output}

    def weight(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def chain(start):
        """(convs padded on their output, convs padded on their input) or None."""
        channels = weight(start.input[1]).shape[0]
        pad_out, pad_in, seen, todo = {start.name: start}, {}, set(), [start.output[0]]
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            if t in outputs:
                return None
            seen.add(t)
            for n in consumers[t]:
                if n.op_type in _PASS_THROUGH:
                    if n.op_type == "Clip" and any(i and i != t and i not in inits
                                                   for i in n.input[1:]):
                        return None
                    todo.append(n.output[0])
                elif n.op_type == "Mul":
                    other = n.input[1] if n.input[0] == t else n.input[0]
                    if other not in seen:  # the SE gate: Sigmoid(Conv) with `channels` outputs
                        sig = producer.get(other)
                        conv = sig and sig.op_type == "Sigmoid" and producer.get(sig.input[0])
                        w = (weight(conv.input[1]) if conv and conv.op_type == "Conv"
                             and _group(conv) == 1 else None)
                        if w is None or w.shape[0] != channels:
                            return None
                        pad_out[conv.name] = conv  # SiLU's Mul finds the start conv
                        todo.append(conv.output[0])
                    todo.append(n.output[0])
                elif n.op_type == "Conv" and n.input[0] == t and weight(n.input[1]) is not None:
                    w = weight(n.input[1])
                    if _group(n) == channels == w.shape[0] and w.shape[1] == 1:  # depthwise
                        pad_out[n.name] = n
                        todo.append(n.output[0])
                    elif _group(n) == 1 and w.shape[1] == channels:
                        pad_in[n.name] = n
                    else:
                        return None
                else:
                    return None
        return list(pad_out.values()), list(pad_in.values())

    def pad(name, axis, extra):
        array = weight(name)
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, extra)
        inits[name].CopyFrom(numpy_helper.from_array(np.pad(array, widths), name))

    padded = []
    for node in list(graph.node):
        w = weight(node.input[1]) if node.op_type == "Conv" else None
        if w is None or _group(node) != 1 or w.shape[0] % align == 0 or w.shape[2:] != (1, 1):
            continue
        found = chain(node)
        if found is None or not any(_group(n) > 1 for n in found[0]):
            continue  # no depthwise conv to speed up
        convs = found[0] + found[1]
        names = [n.input[1] for n in convs]
        if len(set(names)) != len(names) or any(len(consumers[x]) != 1 for x in names):
            continue  # shared weights
        c = w.shape[0]
        extra = -c % align
        for n in found[0]:
            pad(n.input[1], 0, extra)
            if len(n.input) > 2 and n.input[2]:
                pad(n.input[2], 0, extra)
            for a in n.attribute:
                if a.name == "group" and a.i > 1:
                    a.i = c + extra
        for n in found[1]:
            pad(n.input[1], 1, extra)
        padded.append((c, c + extra))
    del graph.value_info[:]  # shapes recorded for the old channel counts
    return model, padded
