"""Evaluation on the held-out split, the exported predictor's agreement, and the plots."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import ImageFolder, build_transforms, read_image
from ..files import atomic_path


@dataclass
class Evaluation:
    labels: np.ndarray            # [N]
    dygraph_logits: np.ndarray    # [N, K] from the trained paddle.nn.Layer
    predictor_logits: np.ndarray  # [N, K] from the exported Paddle Inference model
    int8_logits: np.ndarray | None = None  # [N, K] from the quantized model, if any

    @property
    def predictions(self) -> np.ndarray:
        return self.predictor_logits.argmax(1)

    @property
    def top1(self) -> float:
        return float((self.predictions == self.labels).mean())

    @property
    def dygraph_top1(self) -> float:
        return float((self.dygraph_logits.argmax(1) == self.labels).mean())

    @property
    def agreement(self) -> float:
        """Fraction of images where both give the same class."""
        return float((self.dygraph_logits.argmax(1) == self.predictions).mean())

    @property
    def max_abs_logit_diff(self) -> float:
        return float(np.abs(self.dygraph_logits - self.predictor_logits).max())

    @property
    def int8_top1(self) -> float | None:
        if self.int8_logits is None:
            return None
        return float((self.int8_logits.argmax(1) == self.labels).mean())

    @property
    def int8_agreement(self) -> float | None:
        """Fraction of images where int8 gives the fp32 predictor's class."""
        if self.int8_logits is None:
            return None
        return float((self.int8_logits.argmax(1) == self.predictions).mean())

    def confusion_matrix(self, num_classes: int) -> np.ndarray:
        from sklearn.metrics import confusion_matrix
        return confusion_matrix(self.labels, self.predictions, labels=range(num_classes))

    def per_class_accuracy(self, class_names: list[str]) -> dict[str, float | None]:
        out = {}
        for label, name in enumerate(class_names):
            mask = self.labels == label
            out[name] = float((self.predictions[mask] == label).mean()) if mask.any() else None
        return out


def evaluate(network, predictor, folder: ImageFolder, eval_ops: list,
             batch_size: int = 128, int8_model=None) -> Evaluation:
    """Run the held-out images through the dygraph model and the predictor, batch by
    batch; and through ``int8_model`` (deploy.predict.LoadedModel) when given."""
    import paddle
    from ..deploy.runtime import run_predictor

    transform = build_transforms(eval_ops, "DataLoader.Eval.dataset.transform_ops")
    rng = random.Random(0)  # eval ops draw nothing; any generator will do
    network.eval()
    labels, dygraph, inference, int8 = [], [], [], []
    for start in range(0, len(folder.val), batch_size):
        batch = folder.val[start:start + batch_size]
        images = np.stack([transform(read_image(folder.root / rel), rng) for rel, _ in batch])
        with paddle.no_grad():
            dygraph.append(network(paddle.to_tensor(images)).numpy())
        inference.append(run_predictor(predictor, images))
        if int8_model is not None:
            int8.append(int8_model.run(images))
        labels += [label for _, label in batch]
    return Evaluation(np.array(labels), np.concatenate(dygraph), np.concatenate(inference),
                      np.concatenate(int8) if int8 else None)


# -------------------------------------------------------------------- plots

def _plot_curves(ax_loss, ax_acc, history: list[dict]):
    epochs = [h["epoch"] for h in history]
    for key, label in (("train_loss", "train"), ("val_loss", "held-out")):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            ax_loss.plot(*zip(*points), marker="o", label=label)
    for key, label in (("train_top1", "train"), ("val_top1", "held-out")):
        points = [(h["epoch"], 100 * h[key]) for h in history if key in h]
        if points:
            ax_acc.plot(*zip(*points), marker="o", label=label)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="top-1 accuracy (%)", xlabel="epoch", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 12 else epochs[::max(1, len(epochs) // 10)])
        ax.grid(alpha=0.3)
        ax.legend()


def _plot_confusion(ax, matrix: np.ndarray, class_names: list[str]):
    ax.imshow(matrix, cmap="Blues")
    k = len(class_names)
    if k <= 20:
        ax.set_xticks(range(k), class_names, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), class_names)
        threshold = matrix.max() / 2
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > threshold else "black")
    ax.set(title="confusion matrix (held-out)", xlabel="predicted", ylabel="true")


def _save(fig, path: Path):
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)


def write_plots(out: Path, history: list[dict], matrix: np.ndarray,
                class_names: list[str], title: str) -> dict[str, str]:
    """training_curves.png, confusion_matrix.png and report.png (both, titled)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    _plot_curves(ax_loss, ax_acc, history)
    _save(fig, out / "training_curves.png")

    fig, ax = plt.subplots(figsize=(5, 4.5))
    _plot_confusion(ax, matrix, class_names)
    _save(fig, out / "confusion_matrix.png")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8),
                             gridspec_kw={"width_ratios": [1, 1, 0.9]})
    _plot_curves(axes[0], axes[1], history)
    _plot_confusion(axes[2], matrix, class_names)
    fig.suptitle(title, fontsize=10)
    _save(fig, out / "report.png")
    return {"training_curves": "training_curves.png",
            "confusion_matrix": "confusion_matrix.png", "report": "report.png"}
