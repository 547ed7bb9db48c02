"""How often the int8 model agrees with fp32 on real photos, with the test-vector weights.

    python scripts/int8_agreement.py                                   # the sample photos
    python scripts/int8_agreement.py --photos $PADDLECLAS_ROOT/deploy/images  # and those

ReXNet_1_0 with the official test-vector weights (shared/reference; random
weights, so the classes mean nothing, and their top classes are close
together: a harder test of agreement than a trained model's) is exported as
``rexnet-plugin export`` does, quantized as ``rexnet-plugin quantize`` does,
calibrated on ``--calib`` (default: 40 crops and flips of scikit-learn's two
sample photos), then both folders classify the photos through
``rexnet-plugin predict``'s code. Prints, per set of photos, how often the
top-1 and the top-5 set agree and how far the probabilities move.
docs/deployment.md quotes the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def export_reference(folder: Path) -> Path:
    """ReXNet_1_0 with the test-vector weights, exported as rexnet-plugin export does."""
    import paddle
    from conftest import load_reference_npz
    from rexnet_plugin import create_model
    from rexnet_plugin.deploy.export import export_model
    from rexnet_plugin.weights import to_canonical
    state, _ = load_reference_npz("ReXNet_1_0")
    model = create_model("ReXNet_1_0")
    model.set_state_dict(to_canonical(state))
    paddle.save(model.state_dict(), str(folder / "weights.pdparams"))
    export_model("ReXNet_1_0", str(folder / "weights.pdparams"), folder / "fp32")
    return folder / "fp32"


def calibration_crops(folder: Path) -> Path:
    """40 crops and flips of the two sample photos as PNGs (benchmarks/agreement.py's set)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    folder.mkdir()
    for n, array in enumerate(load_sample_images().images):
        photo = Image.fromarray(array)
        for short in (256, 320):
            scale = short / min(photo.size)
            resized = photo.resize((round(photo.width * scale), round(photo.height * scale)),
                                   Image.BICUBIC)
            w, h, size = *resized.size, 224
            corners = [((w - size) // 2, (h - size) // 2), (0, 0), (w - size, 0),
                       (0, h - size), (w - size, h - size)]
            for c, (left, top) in enumerate(corners):
                crop = resized.crop((left, top, left + size, top + size))
                crop.save(folder / f"{n}_{short}_{c}.png")
                crop.transpose(Image.FLIP_LEFT_RIGHT).save(folder / f"{n}_{short}_{c}_flip.png")
    return folder


def compare(fp32, other, items) -> dict:
    """How ``other`` agrees with ``fp32`` on ``items``."""
    from rexnet_plugin.deploy.predict import predict_items
    a = list(predict_items(fp32, items, topk=5, batch_size=8, progress=False))
    b = list(predict_items(other, items, topk=5, batch_size=8, progress=False))
    top1 = sum(x.class_id == y.class_id for x, y in zip(a, b))
    top5 = sum({c for c, _ in x.topk} == {c for c, _ in y.topk} for x, y in zip(a, b))
    # fp32's probability of its class, against other's probability of that class
    # (0 when it left other's top 5, which bounds the difference from above).
    diff = [abs(x.score - dict(y.topk).get(x.class_id, 0.0)) for x, y in zip(a, b)]
    margin = [x.topk[0][1] - x.topk[1][1] for x in a]
    return {"images": len(items), "top1_agree": top1, "top5_set_agree": top5,
            "max_abs_top1_prob_diff": max(diff), "mean_abs_top1_prob_diff": float(np.mean(diff)),
            "distinct_fp32_top1": len({x.class_id for x in a}),
            "median_fp32_margin": float(np.median(margin))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", nargs="*", type=Path, default=[],
                        help="more folders of photos (e.g. a PaddleClas checkout's "
                             "deploy/images)")
    parser.add_argument("--calib", type=Path, help="calibration images: a folder or list file "
                        "(default: 40 crops of the sample photos)")
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    from ppcls_support import sample_photos
    from rexnet_plugin.deploy.images import collect_images
    from rexnet_plugin.deploy.predict import load_model, prepare_inputs
    from rexnet_plugin.deploy.quantize import quantize_export
    from rexnet_plugin.deploy.runtime import bf16_supported
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32_dir = export_reference(tmp)
        calib = args.calib or calibration_crops(tmp / "calib")
        quantize_export(fp32_dir, calib, tmp / "int8")
        fp32, int8 = load_model(fp32_dir), load_model(tmp / "int8")
        print(f"fp32: {fp32.describe()}\nint8: {int8.describe()}\ncalibration: {calib} "
              f"({len(collect_images([calib]))} images)")
        sets = {"sample photos (sklearn's two, a portrait crop)":
                prepare_inputs(sample_photos(tmp))}
        for folder in args.photos:
            sets[str(folder)] = prepare_inputs([folder])
        others = {"int8": int8}
        if bf16_supported():  # a known perturbation, for scale
            others["bf16 (Paddle Inference)"] = load_model(fp32_dir, precision="bf16")
        print("| photos | images | against fp32 | top-1 agree | top-5 set agree | "
              "|p diff| of fp32's top-1, max / mean | fp32: distinct top-1, median top-1 - "
              "top-2 |\n|---|---|---|---|---|---|---|")
        for name, items in sets.items():
            for label, other in others.items():
                r = compare(fp32, other, items)
                print(f"| {name} | {r['images']} | {label} | {r['top1_agree']}/{r['images']} "
                      f"| {r['top5_set_agree']}/{r['images']} | "
                      f"{r['max_abs_top1_prob_diff']:.4f} / {r['mean_abs_top1_prob_diff']:.4f} "
                      f"| {r['distinct_fp32_top1']}, {r['median_fp32_margin']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
