"""Train PaddleClas's built-in ReXNet_1_0 and the plugin's side by side.

    python scripts/compare_builtin_training.py

Both start from the same seed (so the same initial weights) and see the same
30 random batches (8 x 3 x 64 x 64, 10 classes, Momentum 0.05). Prints the
loss of each step and the largest relative gradient difference of the first
step. docs/paddleclas.md quotes the output.
"""

from __future__ import annotations

import importlib

import numpy as np
import paddle

STEPS = 30


def train(make, xs, ys):
    paddle.seed(0)
    model = make()
    optimizer = paddle.optimizer.Momentum(0.05, parameters=model.parameters(), momentum=0.9)
    paddle.seed(1)  # dropout masks
    losses, first_grads = [], None
    for x, y in zip(xs, ys):
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if first_grads is None:
            first_grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()
                           if p.grad is not None}
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    return np.array(losses), first_grads


def main() -> int:
    arch = importlib.import_module("paddleclas.ppcls.arch")  # the plugin registers here
    builtin = importlib.import_module("paddleclas.ppcls.arch.backbone.model_zoo.rexnet")
    rng = np.random.default_rng(0)
    xs = [paddle.to_tensor(rng.standard_normal((8, 3, 64, 64)).astype("float32"))
          for _ in range(STEPS)]
    ys = [paddle.to_tensor(rng.integers(0, 10, (8,)).astype("int64")) for _ in range(STEPS)]
    theirs, g_theirs = train(lambda: builtin.ReXNet_1_0(class_num=10), xs, ys)
    ours, g_ours = train(lambda: arch.ReXNet_1_0(class_num=10), xs, ys)
    scale = max(np.abs(g).max() for g in g_theirs.values())
    grad_diff = max(np.abs(g_ours[k] - g_theirs[k]).max() for k in g_theirs) / scale
    print("step  built-in  plugin   |diff|")
    for step in (0, 1, 2, 5, 10, 20, STEPS - 1):
        print(f"{step:4d}  {theirs[step]:.5f}  {ours[step]:.5f}  {abs(theirs[step] - ours[step]):.2e}")
    print(f"first step: largest gradient difference {grad_diff:.1e} of the largest gradient")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
