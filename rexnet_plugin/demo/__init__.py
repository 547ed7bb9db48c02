"""``rexnet-plugin demo``: train, evaluate, export and predict, offline, on real data.

1. data: scikit-learn's bundled handwritten digits written as an
   ImageNet-format folder (or ``--data DIR``, a user's own);
2. training from scratch (or ``--pretrained``): PaddleClas's engine when
   ``PADDLECLAS_ROOT`` points at a checkout, else ``paddle.Model.fit``, both
   from the shipped PaddleClas config plus the recipe's overrides;
3. top-1 on the held-out split;
4. export to Paddle Inference, prediction with oneDNN, agreement with dygraph;
5. int8: the exported model quantized on training images (deploy.quantize),
   its held-out top-1 and agreement with fp32;
6. a report folder: curves, confusion matrix, metrics.json, the models.
"""

from .errors import DataError, DemoError, DemoInterrupted, RecipeError, TrainingError
from .run import DemoSettings, run_demo

__all__ = ["DataError", "DemoError", "DemoInterrupted", "DemoSettings", "RecipeError",
           "TrainingError", "run_demo"]
