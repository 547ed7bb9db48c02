"""Parameters (and FLOPs) of the detectors built from the shipped PaddleDetection configs.

    PADDLEDET_ROOT=/path/to/PaddleDetection python scripts/ppdet_params.py

Prints the table of docs/paddledetection.md, with PaddleDetection's own
configs the shipped ones start from for comparison. Needs a checkout (the
configs _BASE_ on its configs/); each config is built by the checkout's
ppdet in a process of its own. tests/test_ppdet_checkout.py checks the
docs' figures against the same count.

FLOPs are counted for the one-stage YOLO-family detectors (PP-YOLOE+) by
``paddle.flops`` on backbone, neck and head in eval mode at 640x640, batch
1: one per multiply-accumulate of every conv and linear layer (plus bias),
two per BatchNorm element; post-processing (NMS) is not counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rexnet_plugin.integrations.configs import copy_ppdet_configs, ppdet_names

# PaddleDetection's own configs the shipped ones start from, and PP-YOLOE+'s
# neighbouring sizes (why the ReXNet ones start from s).
REFERENCES = ["faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yml",
              "ppyoloe/ppyoloe_plus_crn_t_auxhead_300e_coco.yml",
              "ppyoloe/ppyoloe_plus_crn_s_80e_coco.yml",
              "ppyoloe/ppyoloe_plus_crn_m_80e_coco.yml"]
FLOPS_SIZE = 640

# Run inside the checkout's ppdet: build the detector, count its parameters
# (BatchNorm running statistics excluded, frozen parameters included) and,
# for YOLO-family detectors, its FLOPs.
_COUNT = """
import sys
sys.path.insert(0, sys.argv[1])
import paddle
from rexnet_plugin.integrations.paddledet import register
register()
from ppdet.core.workspace import create, load_config
cfg = load_config(sys.argv[2])
if "ReXNet" in cfg:
    cfg["ReXNet"]["pretrained"] = None  # counting needs no weights (and no download)
model = create(cfg.architecture)
def count(layer):
    return sum(int(p.numel()) for n, p in layer.named_parameters()
               if not n.endswith(("_mean", "_variance")))
params = (count(model.backbone), count(model))

class Dense(paddle.nn.Layer):
    # backbone, neck and head: what runs before post-processing
    def __init__(self, det):
        super().__init__()
        self.det = det
    def forward(self, image):
        return self.det.yolo_head(self.det.neck(self.det.backbone({"image": image})))

flops = -1
if hasattr(model, "yolo_head") and hasattr(model, "neck"):
    model.eval()
    size = int(sys.argv[3])
    flops = paddle.flops(Dense(model), [1, 3, size, size])
print("COUNT", *params, flops)
"""


def count_params(root: Path, config: Path) -> tuple[int, int, int | None]:
    """(backbone params, detector params, FLOPs at FLOPS_SIZE or None) of ``config``."""
    env = {**os.environ, "REXNET_PLUGIN_AUTOLOAD": "0"}  # register() above, once
    proc = subprocess.run([sys.executable, "-c", _COUNT, str(root), str(config), str(FLOPS_SIZE)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"building {config} failed:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    _, backbone, total, flops = [ln for ln in out.splitlines() if ln.startswith("COUNT ")][-1].split()
    return int(backbone), int(total), (int(flops) if int(flops) >= 0 else None)


def main() -> int:
    root = os.environ.get("PADDLEDET_ROOT")
    if not root or not all((Path(root) / "configs" / r).is_file() for r in REFERENCES):
        print("set PADDLEDET_ROOT to a PaddleDetection checkout", file=sys.stderr)
        return 2
    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp:
        configs = Path(tmp) / "configs"  # the checkout's configs + ours in rexnet/
        configs.mkdir()
        for entry in (root / "configs").iterdir():
            (configs / entry.name).symlink_to(entry)
        copy_ppdet_configs(configs / "rexnet")
        print(f"| Config | Backbone params (M) | Detector params (M) | GFLOPs @{FLOPS_SIZE} |")
        print("|---|---|---|---|")
        for name in [f"rexnet/{n}" for n in ppdet_names()] + REFERENCES:
            backbone, total, flops = count_params(root, configs / name)
            gflops = "—" if flops is None else f"{flops / 1e9:.2f}"
            print(f"| `{name}` | {backbone / 1e6:.2f} | {total / 1e6:.2f} | {gflops} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
