"""Parameters of the detectors built from the shipped PaddleDetection configs.

    PADDLEDET_ROOT=/path/to/PaddleDetection python scripts/ppdet_params.py

Prints the table of the README's "PaddleDetection" section, with
PaddleDetection's own ResNet-50 FPN config for comparison. Needs a checkout
(the configs _BASE_ on its configs/); each config is built by the checkout's
ppdet in a process of its own. tests/test_ppdet_checkout.py checks the
README's figures against the same count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rexnet_plugin.integrations.configs import copy_ppdet_configs, ppdet_names

REFERENCE = "faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yml"

# Run inside the checkout's ppdet: build the detector, count its parameters
# (BatchNorm running statistics excluded, frozen parameters included).
_COUNT = """
import sys
sys.path.insert(0, sys.argv[1])
from rexnet_plugin.integrations.paddledet import register
register()
from ppdet.core.workspace import create, load_config
cfg = load_config(sys.argv[2])
model = create(cfg.architecture)
def count(layer):
    return sum(int(p.numel()) for n, p in layer.named_parameters()
               if not n.endswith(("_mean", "_variance")))
print("COUNT", count(model.backbone), count(model))
"""


def count_params(root: Path, config: Path) -> tuple[int, int]:
    """(backbone, detector) parameters of ``config``."""
    env = {**os.environ, "REXNET_PLUGIN_AUTOLOAD": "0"}  # register() above, once
    out = subprocess.run([sys.executable, "-c", _COUNT, str(root), str(config)], env=env,
                         capture_output=True, text=True, check=True).stdout
    _, backbone, total = [ln for ln in out.splitlines() if ln.startswith("COUNT ")][-1].split()
    return int(backbone), int(total)


def main() -> int:
    root = os.environ.get("PADDLEDET_ROOT")
    if not root or not (Path(root) / "configs" / REFERENCE).is_file():
        print("set PADDLEDET_ROOT to a PaddleDetection checkout", file=sys.stderr)
        return 2
    root = Path(root)
    with tempfile.TemporaryDirectory() as tmp:
        configs = Path(tmp) / "configs"  # the checkout's configs + ours in rexnet/
        configs.mkdir()
        for entry in (root / "configs").iterdir():
            (configs / entry.name).symlink_to(entry)
        copy_ppdet_configs(configs / "rexnet")
        print("| Config | Backbone params (M) | Detector params (M) |")
        print("|---|---|---|")
        for name in [f"rexnet/{n}" for n in ppdet_names()] + [REFERENCE]:
            backbone, total = count_params(root, configs / name)
            print(f"| `{name}` | {backbone / 1e6:.2f} | {total / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
