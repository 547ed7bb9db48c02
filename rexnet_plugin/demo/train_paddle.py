"""Training without a PaddleClas checkout: Paddle's high-level API (``paddle.Model.fit``).

Reads everything from the effective PaddleClas config (recipe.py), so this
path and PaddleClas's engine train the same recipe. A checkpoint is written
after every epoch (temp file, rename, then a pointer file), so Ctrl-C at any
moment leaves the last completed epoch loadable.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import ImageFolder, make_dataset
from ..files import atomic_path, write_json
from .recipe import build_loss, build_optimizer

CHECKPOINT_POINTER = "latest.json"


def last_checkpoint(checkpoint_dir: Path) -> tuple[int, Path] | None:
    """(epoch, params path) of the last completed epoch, or None."""
    pointer = checkpoint_dir / CHECKPOINT_POINTER
    if not pointer.is_file():
        return None
    info = json.loads(pointer.read_text())
    return info["epoch"], checkpoint_dir / info["params"]


def _evaluate(network, loader, loss_fn) -> tuple[float, float]:
    """(mean loss, top-1) on a loader, in eval mode, as PaddleClas's evaluation."""
    import paddle
    network.eval()
    loss_sum = correct = count = 0.0
    with paddle.no_grad():
        for images, labels in loader:
            logits = network(images)
            loss_sum += float(loss_fn(logits, labels)) * len(labels)
            correct += float((logits.argmax(axis=1) == labels).astype("float32").sum())
            count += len(labels)
    network.train()
    return loss_sum / count, correct / count


def _make_callbacks(network, optimizer, val_loader, eval_loss, checkpoint_dir: Path,
                    history: list, epochs: int, steps_per_epoch: int, progress: bool,
                    on_epoch_end):
    import paddle

    class EpochEnd(paddle.callbacks.Callback):
        """Per epoch: an atomic checkpoint, then the held-out loss and top-1."""

        def __init__(self):
            super().__init__()
            self.loss_sum = self.count = 0.0
            self.bar = None

        def on_train_begin(self, logs=None):
            if progress:
                from tqdm import tqdm
                self.bar = tqdm(total=epochs * steps_per_epoch, unit="step",
                                desc="training", dynamic_ncols=True)

        def on_epoch_begin(self, epoch, logs=None):
            self.loss_sum = self.count = 0.0
            if self.bar is not None:
                self.bar.set_description(f"epoch {epoch + 1}/{epochs}")

        def on_train_batch_end(self, step, logs=None):
            loss = float(logs["loss"][0])
            self.loss_sum += loss * logs["batch_size"]
            self.count += logs["batch_size"]
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            params = checkpoint_dir / f"epoch_{done}.pdparams"
            with atomic_path(params) as tmp:
                paddle.save(network.state_dict(), str(tmp))
            with atomic_path(params.with_suffix(".pdopt")) as tmp:
                paddle.save(optimizer.state_dict(), str(tmp))
            # The pointer moves only once both files are complete.
            write_json(checkpoint_dir / CHECKPOINT_POINTER,
                       {"epoch": done, "params": params.name,
                        "optimizer": params.with_suffix(".pdopt").name})
            for old in checkpoint_dir.glob("epoch_*.pd*"):
                if old.stem != params.stem:
                    old.unlink()

            val_loss, val_top1 = _evaluate(network, val_loader, eval_loss)
            entry = {"epoch": done, "train_loss": self.loss_sum / self.count,
                     "train_top1": float(logs["acc"]), "val_loss": val_loss,
                     "val_top1": val_top1}
            history.append(entry)
            write_json(checkpoint_dir / "history.json", history)
            message = (f"epoch {done}/{epochs}: train loss {entry['train_loss']:.3f}, "
                       f"train top-1 {entry['train_top1']:.3f}, held-out loss "
                       f"{val_loss:.3f}, held-out top-1 {val_top1:.3f}")
            if self.bar is not None:
                self.bar.write(message)
            if on_epoch_end is not None:  # a hook for tests (e.g. a simulated Ctrl-C)
                on_epoch_end(done)

        def on_train_end(self, logs=None):
            self.close()

        def close(self):
            if self.bar is not None:
                self.bar.close()

    return EpochEnd()


def train_with_paddle(config: dict, folder: ImageFolder, network, checkpoint_dir: Path,
                      history: list, seed: int, progress: bool = True,
                      on_epoch_end=None) -> None:
    """Train ``network`` with the config, appending one dict per epoch to ``history``.

    KeyboardInterrupt propagates after the progress bar is closed; the last
    completed epoch is in ``checkpoint_dir`` (see ``last_checkpoint``).
    """
    import paddle
    from paddle.static import InputSpec

    epochs = int(config["Global"]["epochs"])
    loaders = {}
    for split, section in (("train", "Train"), ("val", "Eval")):
        cfg = config["DataLoader"][section]
        dataset = make_dataset(folder, split, cfg["dataset"]["transform_ops"], seed)
        sampler = cfg.get("sampler", {})
        loaders[split] = paddle.io.DataLoader(
            dataset, batch_size=int(sampler.get("batch_size", 64)),
            shuffle=bool(sampler.get("shuffle", split == "train")),
            drop_last=bool(sampler.get("drop_last", False)), num_workers=0)
    steps_per_epoch = len(loaders["train"])

    optimizer = build_optimizer(config["Optimizer"], network.parameters(),
                                epochs, steps_per_epoch)
    size = config["Global"]["image_shape"][1:]
    model = paddle.Model(network, inputs=[InputSpec([None, 3, *size], "float32", "image")],
                         labels=[InputSpec([None], "int64", "label")])
    model.prepare(optimizer, build_loss(config["Loss"]["Train"]), paddle.metric.Accuracy())

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    eval_loss = build_loss(config["Loss"]["Eval"], "Loss.Eval")
    callback = _make_callbacks(network, optimizer, loaders["val"], eval_loss, checkpoint_dir,
                               history, epochs, steps_per_epoch, progress, on_epoch_end)
    try:
        # Held-out evaluation runs in the callback, with Loss.Eval as PaddleClas's.
        model.fit(loaders["train"], epochs=epochs, verbose=0, callbacks=[callback])
    finally:
        callback.close()  # before anything else prints
