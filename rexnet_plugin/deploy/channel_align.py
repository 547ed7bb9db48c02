"""Zero-pad ReXNet's odd channel counts to a multiple the int8 kernels like.

ReXNet's blocks expand to ``6 x`` their input channels: 162, 228, 300, 366,
... . ONNX Runtime's depthwise convolution (int8 and fp32 alike) runs such a
count through its remainder path: a depthwise 3x3 conv with 162 channels
took longer than one with 176 on the benchmark machine. This rewrite pads
each expanded tensor of a block to the next multiple of ``ALIGN`` with
channels that are zero everywhere, which is exact in float:

- the expanding 1x1 conv gets zero output rows (and a zero bias), so the new
  channels are 0; SiLU(0) = 0, ReLU6(0) = 0;
- the depthwise conv gets zero filters (0 in, 0 out);
- in the SE block, average pooling gives 0, the reducing conv gets zero input
  columns, the expanding conv zero rows, so its sigmoid is 0.5, times 0;
- the projecting 1x1 conv gets zero input columns: its output is unchanged.

A chain is padded only when every consumer of its tensors is one of these
operators; anything else (a Concat, a Split, a graph output) leaves that
chain as it was. Run on a float graph with BatchNorm folded into the convs
(ONNX Runtime's quant_pre_process does that), before quantization, so that
calibration sees the final graph.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

ALIGN = 16  # AVX-512: 16 int32 / fp32 lanes
_ELEMENTWISE = ("Sigmoid", "Relu", "Clip", "HardSigmoid", "HardSwish")


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper
        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers = defaultdict(list)
        for n in self.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in self.graph.output}
        self.numpy_helper = numpy_helper

    def weight(self, name):
        t = self.inits.get(name)
        return None if t is None else self.numpy_helper.to_array(t)

    def set_weight(self, name, array):
        new = self.numpy_helper.from_array(np.ascontiguousarray(array), name)
        self.inits[name].CopyFrom(new)


def _chain(g: _Graph, start_conv) -> dict | None:
    """The edits that pad ``start_conv``'s output, or None when some consumer
    is not one this rewrite understands."""
    channels = g.weight(start_conv.input[1]).shape[0]
    pad_out = {start_conv.name: start_conv}   # convs whose output rows are padded
    pad_in = {}                                # 1x1/group-1 convs whose input columns are padded
    depthwise = {}
    tensors, todo = set(), [start_conv.output[0]]
    while todo:
        t = todo.pop()
        if t in tensors:
            continue
        if t in g.outputs:
            return None
        tensors.add(t)
        for n in g.consumers[t]:
            if n.op_type in _ELEMENTWISE or n.op_type == "GlobalAveragePool":
                if n.op_type == "Clip" and any(i != t and i and i not in g.inits
                                               for i in n.input[1:]):
                    return None
                todo.append(n.output[0])
            elif n.op_type == "Mul":
                other = n.input[1] if n.input[0] == t else n.input[0]
                if other not in tensors:
                    # The SE gate: Sigmoid(Conv(...)) with ``channels`` outputs.
                    sig = g.producer.get(other)
                    conv = g.producer.get(sig.input[0]) if sig is not None else None
                    if (sig is None or sig.op_type != "Sigmoid" or conv is None
                            or conv.op_type != "Conv" or _attr(conv, "group", 1) != 1
                            or g.weight(conv.input[1]) is None
                            or g.weight(conv.input[1]).shape[0] != channels):
                        return None
                    pad_out[conv.name] = conv
                    todo.append(conv.output[0])
                todo.append(n.output[0])
            elif n.op_type == "Conv" and n.input[0] == t:
                w = g.weight(n.input[1])
                if w is None:
                    return None
                group = _attr(n, "group", 1)
                if group == channels and w.shape[0] == channels and w.shape[1] == 1:
                    depthwise[n.name] = n
                    todo.append(n.output[0])
                elif group == 1 and w.shape[1] == channels:
                    pad_in[n.name] = n
                else:
                    return None
            else:
                return None
    return {"channels": channels, "pad_out": pad_out, "pad_in": pad_in, "depthwise": depthwise}


def _pad_axis(array, axis, extra):
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, extra)
    return np.pad(array, widths)


def align_channels(model, align: int = ALIGN) -> tuple[object, list[tuple[int, int]]]:
    """Pad every paddable expanded tensor of ``model`` (an onnx.ModelProto,
    changed in place) to a multiple of ``align`` channels. Returns the model
    and the (old, new) channel counts of the chains padded."""
    g = _Graph(model)
    done = set()
    padded = []
    for node in list(g.graph.node):
        if node.op_type != "Conv" or node.name in done or _attr(node, "group", 1) != 1:
            continue
        w = g.weight(node.input[1])
        if w is None or w.shape[0] % align == 0 or w.shape[2:] != (1, 1):
            continue
        chain = _chain(g, node)
        if chain is None or not chain["depthwise"]:
            continue
        c = chain["channels"]
        extra = -c % align
        used = [n.input[1] for group in ("pad_out", "pad_in", "depthwise")
                for n in chain[group].values()]
        if len(used) != len(set(used)) or any(
                len(g.consumers[name]) != 1 for name in used):  # shared weights
            continue
        for n in chain["pad_out"].values():
            g.set_weight(n.input[1], _pad_axis(g.weight(n.input[1]), 0, extra))
            if len(n.input) > 2 and n.input[2]:
                g.set_weight(n.input[2], _pad_axis(g.weight(n.input[2]), 0, extra))
        for n in chain["depthwise"].values():
            g.set_weight(n.input[1], _pad_axis(g.weight(n.input[1]), 0, extra))
            if len(n.input) > 2 and n.input[2]:
                g.set_weight(n.input[2], _pad_axis(g.weight(n.input[2]), 0, extra))
            for a in n.attribute:
                if a.name == "group":
                    a.i = c + extra
        for n in chain["pad_in"].values():
            g.set_weight(n.input[1], _pad_axis(g.weight(n.input[1]), 1, extra))
        done.update(chain["pad_out"])
        padded.append((c, c + extra))
    # Shapes recorded for the old channel counts would now be wrong.
    del g.graph.value_info[:]
    return model, padded
