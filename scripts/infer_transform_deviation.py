"""How far PaddleClas's deploy operators are from the seed's eval transform.

    python scripts/infer_transform_deviation.py                      # the sample photos
    python scripts/infer_transform_deviation.py --photos DIR [DIR ...]  # and every photo there

The configs' Eval section resizes with paddle.vision's Resize and CenterCrop
(the seed's transform: the long side truncated, the crop offset rounded).
PaddleClas's deploy tools, PaddleX and FastDeploy only know ResizeImage and
CropImage (the long side rounded, the offset floored), which is what
inference.yml says. For each variant's eval transform this prints, per photo,
the largest absolute difference between the two inputs (normalised units; a
pixel is 1/255/std, about 0.017) and how many photos differ at all.
docs/deployment.md quotes the output.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def seed_input(path: Path, t) -> np.ndarray:
    """paddle.vision Resize + CenterCrop on a PIL image, then normalise: CHW float32."""
    from paddle.vision.transforms import CenterCrop, Resize
    from PIL import Image
    img = CenterCrop(t.crop_size)(Resize(t.resize_short, t.interpolation)(
        Image.open(path).convert("RGB")))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(t.mean, np.float32)) / np.array(t.std, np.float32)
    return x.transpose(2, 0, 1)


def photos_in(folders: list[Path], min_side: int) -> list[Path]:
    from PIL import Image
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            try:
                with Image.open(path) as img:
                    if min(img.size) >= min_side:
                        found.append(path)
            except OSError:
                continue
    return found


def main() -> int:
    from PIL import Image
    from ppcls_support import sample_photos
    from rexnet_plugin.deploy.infer_config import eval_transform_ops, preprocess_ops
    from rexnet_plugin.zoo import VARIANTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", nargs="*", type=Path, default=[],
                        help="folders of photos to measure too (searched recursively)")
    args = parser.parse_args()
    transforms = {}
    for name, v in VARIANTS.items():
        transforms.setdefault(v.eval_transform, []).append(name)
    with tempfile.TemporaryDirectory() as tmp:
        samples = sample_photos(Path(tmp))
        for t, names in transforms.items():
            ops = preprocess_ops(eval_transform_ops(t))  # what inference.yml says

            def ours(path):
                with Image.open(path) as image:
                    return ops(image)
            print(f"resize {t.resize_short} ({t.interpolation}), crop {t.crop_size}: "
                  f"{', '.join(names)}")
            for path in samples:
                diff = np.abs(ours(path) - seed_input(path, t))
                print(f"  {path.name:<12} max |diff| {diff.max():.7f}, mean {diff.mean():.4f}")
            photos = photos_in(args.photos, t.crop_size)
            if photos:
                diffs = [np.abs(ours(p) - seed_input(p, t)) for p in photos]
                worst = np.array([d.max() for d in diffs])
                mean = np.array([d.mean() for d in diffs])
                differ = worst > 1e-5
                print(f"  {len(photos)} photos in {', '.join(map(str, args.photos))} (short "
                      f"side >= {t.crop_size}): {int(differ.sum())} differ; max |diff| "
                      f"{worst.max():.4f}; among those that differ, median max |diff| "
                      f"{np.median(worst[differ]) if differ.any() else 0:.4f} and median mean "
                      f"|diff| {np.median(mean[differ]) if differ.any() else 0:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
