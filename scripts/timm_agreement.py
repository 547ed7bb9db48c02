"""ReXNet-R against timm: parameter counts and the differences on timm's vectors.

    REXNET_REFERENCE_DIR=../shared/reference python scripts/timm_agreement.py

Prints the tables quoted in docs/model.md: trainable parameters of every
ReXNetR_* next to timm's (timm_rexnetr.json), and the max abs difference of
the logits and of forward_intermediates from timm's own rexnetr_100
(timm_rexnetr_100.npz, loaded from a .safetensors file in timm's layout).
tests/test_rexnetr.py asserts the same within the tolerances.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    root = Path(os.environ.get("REXNET_REFERENCE_DIR",
                               Path(__file__).resolve().parents[2] / "shared" / "reference"))
    if not (root / "timm_rexnetr.json").is_file():
        print(f"no timm_rexnetr.json in {root}: set REXNET_REFERENCE_DIR", file=sys.stderr)
        return 2
    import paddle
    from safetensors.numpy import save_file

    from rexnet_plugin import create_model
    from rexnet_plugin.complexity import count_params
    from rexnet_plugin.zoo import VARIANTS

    reference = json.loads((root / "timm_rexnetr.json").read_text())
    print("| Variant | timm | timm params | ours |\n|---|---|---|---|")
    for name, v in VARIANTS.items():
        if v.kind == "r":
            ours = count_params(create_model(name))
            print(f"| `{name}` | `{v.timm_name}` | {reference[v.timm_name]['params']:,} | {ours:,} |")

    data = np.load(root / "timm_rexnetr_100.npz")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rexnetr_100.safetensors"
        save_file({k[len("state."):]: data[k] for k in data.files if k.startswith("state.")},
                  str(path))
        model = create_model("ReXNetR_1_0", pretrained=str(path))
    model.eval()
    print("\n| Input | logits | stride 2 | 4 | 8 | 16 | 32 |\n|---|---|---|---|---|---|---|")
    with paddle.no_grad():
        for case in "ab":
            x = data[f"{case}.input"]
            final, stages = model.forward_intermediates(paddle.to_tensor(x))
            diffs = [np.abs(model.forward_head(final).numpy() - data[f"{case}.logits"]).max()]
            diffs += [np.abs(s.numpy() - data[f"{case}.stage.{i}"]).max()
                      for i, s in enumerate(stages)]
            print(f"| {'x'.join(map(str, x.shape))} | " + " | ".join(f"{d:.1e}" for d in diffs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
