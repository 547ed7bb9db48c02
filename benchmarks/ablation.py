"""Which of the model's speed choices help, measured: python benchmarks/ablation.py

Each row undoes one choice of rexnet_plugin/model.py ("undone") or tries
an alternative that was not kept ("tried"), by patching forward methods of
one instance, never the package. Each is exported to Paddle Inference and
timed against the current model and PaddleClas's built-in ReXNetV1, all in
one process, interleaved batch by batch, same weights. Every variant's
outputs are checked against the current model's first.

Writes benchmarks/results/ablation.md and .json. Timings are CPU time of
the process (robust on a shared machine) and wall time; 1 thread by default
for the same reason (--threads 2 for the benchmark's setting).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from rexnet_plugin.files import write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _variants():
    """name -> (description, function patching a fresh model in place)."""
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F
    from rexnet_plugin import model as M

    def each(model, cls, forward):
        for layer in model.sublayers():
            if isinstance(layer, cls):
                layer.forward = types.MethodType(forward, layer)

    def silu_op(model):
        def forward(self, x):
            return F.silu(x)
        each(model, M.Silu, forward)

    def slice_concat(model):
        def forward(self, x):
            out = self.out(x)
            if not self.use_shortcut:
                return out
            c = self.in_channels
            if c == self.out_channels:
                return out + x
            return paddle.concat([out[:, :c] + x, out[:, c:]], axis=1)
        each(model, M.LinearBottleneck, forward)

    def zero_pad(model):
        def forward(self, x):
            out = self.out(x)
            if not self.use_shortcut:
                return out
            c = self.in_channels
            if c < self.out_channels:
                x = paddle.concat([x, paddle.zeros_like(out[:, c:])], axis=1)
            return out + x
        each(model, M.LinearBottleneck, forward)

    def skip_dropout(model):
        def forward_head(self, x, pre_logits=False):
            x = self.avg_pool(x)
            for layer in self.output:
                if not isinstance(layer, nn.Dropout):  # the identity in eval
                    x = layer(x)
            return x.flatten(1)
        model.forward_head = types.MethodType(forward_head, model)

    def se_mean(model):
        def forward(self, x):
            return x * self.fc(x.mean([2, 3], keepdim=True))
        each(model, M.SqueezeExcite, forward)

    return {
        "ours": ("this package's model", lambda model: None),
        "silu_op": ("undone: the activation exported as silu, not swish", silu_op),
        "slice_concat": ("undone: the shortcut as concat([out[:, :c] + x, out[:, c:]]), "
                         "not split", slice_concat),
        "zero_pad": ("tried: the shortcut as out + concat([x, zeros])", zero_pad),
        "skip_dropout": ("tried: no dropout op in the exported graph", skip_dropout),
        "se_mean": ("tried: SE pooling by mean(), not AdaptiveAvgPool2D", se_mean),
    }


def train_ablation(steps: int, state: dict) -> dict[str, float]:
    """The activation op in dygraph training: silu (ours) against swish."""
    import paddle
    import paddle.nn.functional as F
    from rexnet_plugin import model as M
    from run import builtin_class

    def swish_forward(self, x):
        return F.swish(x)
    # "swish_in_dygraph" undoes the other half of the Silu choice.
    models = {"ours": M.ReXNet(), "swish_in_dygraph": M.ReXNet(), "builtin": builtin_class()()}
    for layer in models["swish_in_dygraph"].sublayers():
        if isinstance(layer, M.Silu):
            layer.forward = types.MethodType(swish_forward, layer)
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((16, 3, 160, 160)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 1000, (16,)))
    optimizers = {}
    for name, model in models.items():
        model.set_state_dict(state)
        model.train()
        optimizers[name] = paddle.optimizer.Momentum(0.01, 0.9, parameters=model.parameters())

    def step(name):
        loss = F.cross_entropy(models[name](x), y)
        loss.backward()
        optimizers[name].step()
        optimizers[name].clear_grad()
    names = list(models)
    for name in names:
        step(name)
    cpu = {name: [] for name in names}
    for i in range(steps):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.process_time()
            step(name)
            cpu[name].append(1e3 * (time.process_time() - start))
    return {name: statistics.median(v) for name, v in cpu.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--train-steps", type=int, default=8,
                        help="dygraph training steps per variant (0: skip)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # dygraph kernels

    import paddle
    from peak import describe_machine
    from run import builtin_class
    from rexnet_plugin.deploy.export import export_inference
    from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
    from rexnet_plugin.model import ReXNet

    paddle.seed(0)
    reference = ReXNet()
    state = reference.state_dict()
    variants = _variants()
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype("float32")
    predictors, descriptions = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (description, patch) in variants.items():
            model = ReXNet()
            model.set_state_dict(state)
            patch(model)
            export_inference(model, Path(tmp) / name, 224)
            descriptions[name] = description
        builtin = builtin_class()()
        builtin.set_state_dict(state)
        export_inference(builtin, Path(tmp) / "builtin", 224)
        descriptions["builtin"] = "PaddleClas's built-in ReXNetV1"
        for name in descriptions:
            predictors[name] = create_predictor(Path(tmp) / name, threads=args.threads)
        expected = run_predictor(predictors["ours"], x)
        for name, predictor in predictors.items():
            diff = np.abs(run_predictor(predictor, x) - expected).max()
            if diff > 1e-4:
                raise SystemExit(f"{name} changes the outputs by {diff:.2e}")

    rows = {}
    for batch in (int(b) for b in args.batches.split(",")):
        images = x[:batch]
        for predictor in predictors.values():
            for _ in range(3):
                run_predictor(predictor, images)
        wall = {n: [] for n in predictors}
        cpu = {n: [] for n in predictors}
        names = list(predictors)
        for i in range(args.repeats):
            for name in names if i % 2 == 0 else names[::-1]:
                w, c = time.perf_counter(), time.process_time()
                run_predictor(predictors[name], images)
                cpu[name].append((time.process_time() - c) * 1e3 / batch)
                wall[name].append((time.perf_counter() - w) * 1e3 / batch)
        base = statistics.median(cpu["builtin"])
        rows[batch] = {n: {"cpu_ms_per_image": statistics.median(cpu[n]),
                           "wall_ms_per_image": statistics.median(wall[n]),
                           "cpu_ratio_to_builtin": statistics.median(cpu[n]) / base}
                       for n in predictors}

    doc = {"command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
           "threads": args.threads, "repeats": args.repeats, "descriptions": descriptions,
           "machine": describe_machine(), "load_average": list(os.getloadavg()), "batches": rows}
    lines = ["# Ablation: each speed choice undone, and the alternatives tried", "",
             "Paddle Inference oneDNN fp32.", "",
             f"Generated by `{doc['command'].strip()}`: {args.threads} thread(s), median of "
             f"{args.repeats} interleaved batches, same weights, outputs checked equal. CPU time "
             f"is robust to other processes on the machine; wall time is what a user sees.", "",
             "| Variant | " + " | ".join(f"batch {b}: CPU ms/img (ratio to built-in) | wall ms/img"
                                          for b in rows) + " |",
             "|---|" + "---|---|" * len(rows)]
    for name, description in descriptions.items():
        cells = [f"{rows[b][name]['cpu_ms_per_image']:.2f} ({rows[b][name]['cpu_ratio_to_builtin']:.3f}) "
                 f"| {rows[b][name]['wall_ms_per_image']:.2f}" for b in rows]
        lines.append(f"| `{name}`: {description} | " + " | ".join(cells) + " |")
    if args.train_steps:
        train = train_ablation(args.train_steps, state)
        doc["train"] = train
        base = train["builtin"]
        lines += ["", "Dygraph training step (batch 16, 160x160), CPU ms per step, median of "
                  f"{args.train_steps} interleaved steps:", "",
                  "| Variant | CPU ms/step | ratio to built-in |", "|---|---|---|"]
        for name, ms in train.items():
            lines.append(f"| `{name}` | {ms:.0f} | {ms / base:.3f} |")
    lines += ["", f"Load average during the run: {doc['load_average'][0]:.1f}."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for path, text in ((RESULTS / "ablation.json", json.dumps(doc, indent=1) + "\n"),
                       (RESULTS / "ablation.md", "\n".join(lines) + "\n")):
        write_text(path, text)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
