"""``rexnet-plugin bench FOLDER``: a quick look in one process; benchmarks/run.py compares."""

from __future__ import annotations

import statistics
import timeit

import numpy as np

# (runtime, precision) pairs tried, in load_model's names.
PATHS = (("paddle", "fp32"), ("paddle", "bf16"), ("onnx", "fp32"),
         ("openvino", "fp32"), ("openvino", "bf16"))


def time_folder(folder, batches=(1, 8), warmup: int = 3, repeats: int = 20,
                threads: int | None = None) -> list[dict]:
    """Median ms/image per path and batch; rows of paths that cannot run say why ("skipped")."""
    from PIL import Image
    from .predict import ModelFolderError, load_model
    for name, value, low in (("--repeats", repeats, 1), ("--warmup", warmup, 0),
                             *(("--batch", b, 1) for b in batches)):
        if value < low:
            raise ValueError(f"{name} {value}: expected an integer of at least {low}")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), np.uint8))
    rows = []
    for runtime, precision in PATHS:
        try:
            model = load_model(folder, runtime=runtime, precision=precision, threads=threads)
        except (ValueError, ImportError) as err:  # UnsupportedCPUError, no OpenVINO, ...
            rows.append({"path": f"{runtime} {precision}", "skipped": str(err)})
            continue
        name = f"{model.runtime} {model.precision}"
        if any(row["path"] == name for row in rows):
            continue  # an int8 folder is int8 whatever precision was asked
        image = model.config.preprocess(photo)
        row = {"path": name}
        for batch in batches:
            x = np.repeat(image[None], batch, axis=0)
            timeit.repeat(lambda: model.run(x), number=1, repeat=warmup)
            seconds = timeit.repeat(lambda: model.run(x), number=1, repeat=repeats)
            row[f"batch {batch}"] = 1e3 * statistics.median(seconds) / batch
        rows.append(row)
    if all("skipped" in row for row in rows):
        raise ModelFolderError(rows[0]["skipped"])
    return rows
