"""A tiny COCO-format detection dataset, drawn on the fly for the ppdet tests.

Each image has a few filled rectangles of two colours on a noisy background;
the rectangles are the boxes, the colour is the class. Small enough that a
few training steps take seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ({"id": 1, "name": "red_box"}, {"id": 2, "name": "blue_box"})
_COLOURS = {1: (220, 40, 40), 2: (40, 60, 220)}


def make_coco_dataset(root: str | Path, num_images: int = 4, size: tuple[int, int] = (96, 128),
                      boxes_per_image: int = 2, seed: int = 0) -> Path:
    """Write ``root/images/*.jpg`` and ``root/annotations/instances.json``; return root."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = size
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        pixels = rng.integers(90, 160, size=(height, width, 3), dtype=np.uint8)
        for _ in range(boxes_per_image):
            w, h = (int(v) for v in rng.integers(16, 40, size=2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            category = int(rng.integers(1, len(CATEGORIES) + 1))
            pixels[y:y + h, x:x + w] = _COLOURS[category]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        file_name = f"{image_id:06d}.jpg"
        Image.fromarray(pixels).save(root / "images" / file_name, quality=95)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    coco = {"images": images, "annotations": annotations, "categories": list(CATEGORIES)}
    (root / "annotations" / "instances.json").write_text(json.dumps(coco))
    return root


def dataset_overrides(root: str | Path) -> dict:
    """ppdet config entries that point the train/eval/test datasets at ``root``."""
    root = str(root)
    coco = {"dataset_dir": root, "image_dir": "images", "anno_path": "annotations/instances.json"}
    return {
        "num_classes": len(CATEGORIES),
        "TrainDataset": {"name": "COCODataSet", **coco,
                         "data_fields": ["image", "gt_bbox", "gt_class", "is_crowd"]},
        "EvalDataset": {"name": "COCODataSet", **coco, "allow_empty": True},
        "TestDataset": {"name": "ImageFolder", "dataset_dir": root,
                        "anno_path": "annotations/instances.json"},
    }
