"""One PaddleDetection step on one config, run in a fresh process by the ppdet tests.

    python tests/ppdet_flow.py '{"stage": "eval", "config": "...", ...}'

ppdet keeps its config in a process-wide dict and some of its modules
mutate their default arguments (LCPAN's spatial_scales), so two detectors,
or two builds of one, cannot share a process: each step gets its own. The
last line printed is ``RESULT <json>``, which the test reads.

Arguments (JSON): stage; config; paddledet_root (optional: a checkout to
import ppdet from, as its tools do); weights, model_dir, out_dir,
save_weights as the stage needs. Nothing here imports rexnet_plugin: the
autoload hook registers the backbone when ppdet is imported.
"""

from __future__ import annotations

import json
import sys
import traceback


def _batch_arrays(batch: dict) -> dict:
    return {k: v.numpy() for k, v in batch.items() if hasattr(v, "numpy")}


def stage_resolve(cfg, args) -> dict:
    """The resolved config, each top-level key dumped to YAML text."""
    import yaml

    def plain(value):
        return dict(value) if isinstance(value, dict) else value
    return {k: yaml.dump(plain(v), sort_keys=True) for k, v in cfg.items()}


def stage_eval(cfg, args) -> dict:
    """Trainer.evaluate on the eval set, then one batch through the model."""
    from ppdet.engine import Trainer
    trainer = Trainer(cfg, mode="eval")
    if args.get("weights"):
        trainer.load_weights(args["weights"])
    # evaluate() resets its metric after logging it: keep the results first.
    metric, results = trainer._metrics[0], {}
    accumulate = metric.accumulate
    metric.accumulate = lambda: (accumulate(), results.update(metric.get_results()))
    trainer.evaluate()
    stats = results["bbox"]
    batch = next(iter(trainer.loader))
    model = trainer.model
    model.eval()
    feats = model.backbone(batch)
    out = model(batch)
    return {
        "coco_stats": [float(s) for s in stats],
        "image_shape": list(batch["image"].shape),
        "feature_shapes": [list(f.shape) for f in feats],
        "out_shape": [[s.channels, s.stride] for s in model.backbone.out_shape],
        "bbox": out["bbox"].numpy().tolist(),
        "bbox_num": out["bbox_num"].numpy().tolist(),
    }


def stage_train(cfg, args) -> dict:
    """Trainer.train for the configured epochs; returns the final losses."""
    from ppdet.engine import Trainer
    trainer = Trainer(cfg, mode="train")
    if cfg.get("pretrain_weights"):
        trainer.load_weights(cfg.pretrain_weights)
    trainer.train()
    losses = trainer.status["training_staus"].get()
    return {"losses": {k: float(v) for k, v in losses.items()}}


def stage_export(cfg, args) -> dict:
    """Trainer.export, as tools/export_model.py does."""
    from ppdet.engine import Trainer
    trainer = Trainer(cfg, mode="test")
    if args.get("weights"):
        trainer.load_weights(args["weights"])
    if args.get("save_weights"):  # what was exported, for the compare step
        import paddle
        paddle.save(trainer.model.state_dict(), args["save_weights"])
    trainer.export(args["out_dir"])
    return {}


def stage_compare(cfg, args) -> dict:
    """Exported model in Paddle Inference vs the dygraph model, same input."""
    from pathlib import Path

    import numpy as np
    import paddle
    from paddle import inference
    from ppdet.core.workspace import create
    from ppdet.utils.checkpoint import load_weight

    model = create(cfg.architecture)
    load_weight(model, args["weights"])
    model.eval()
    if args.get("export_nms") is False:  # raw boxes and scores, as export.nms=False exports
        model.export_nms = False
    shape = cfg.TestReader["inputs_def"]["image_shape"][-2:] \
        if "inputs_def" in cfg.TestReader else [256, 320]
    rng = np.random.default_rng(0)
    feed = {
        "image": rng.standard_normal([1, 3, *shape]).astype("float32"),
        "im_shape": np.array([shape], dtype="float32"),
        "scale_factor": np.ones([1, 2], dtype="float32"),
    }
    with paddle.no_grad():
        out = model({k: paddle.to_tensor(v) for k, v in feed.items()})
    reference = [out["bbox"].numpy(), out["scores" if "scores" in out else "bbox_num"].numpy()]

    model_dir = Path(args["model_dir"])
    model_file = next(p for p in (model_dir / "model.json", model_dir / "model.pdmodel")
                      if p.exists())
    config = inference.Config(str(model_file), str(model_dir / "model.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    if not args.get("mkldnn", False):
        config.disable_mkldnn()  # Paddle 3 turns oneDNN on by default on CPUs
    # No enable_memory_optim(): it fails on Paddle 3.3.1.
    predictor = inference.create_predictor(config)
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        handle.reshape(list(feed[name].shape))
        handle.copy_from_cpu(feed[name])
    predictor.run()
    exported = [predictor.get_output_handle(n).copy_to_cpu()
                for n in predictor.get_output_names()]
    return {"input_names": predictor.get_input_names(),
            "dygraph": [a.tolist() for a in reference],
            "exported": [a.tolist() for a in exported]}


def stage_build(cfg, args) -> dict:
    """ppdet's create() on the architecture, with every network request refused:
    building a detector (for eval, export or infer) must work offline."""
    import urllib.request
    from ppdet.core.workspace import create

    def refuse(self, request, *a, **k):
        raise OSError(f"network request during construction: {getattr(request, 'full_url', request)}")
    urllib.request.OpenerDirector.open = refuse
    model = create(cfg.architecture)
    return {"parameters": sum(int(p.size) for p in model.parameters())}


STAGES = {"resolve": stage_resolve, "build": stage_build, "eval": stage_eval, "train": stage_train,
          "export": stage_export, "compare": stage_compare}


def main() -> int:
    args = json.loads(sys.argv[1])
    if args.get("paddledet_root"):
        sys.path.insert(0, args["paddledet_root"])  # what ppdet's tools do
    import numpy as np
    import paddle
    import ppdet
    from ppdet.core.workspace import load_config
    paddle.seed(0)
    np.random.seed(0)
    result = {"ppdet": ppdet.__file__}
    try:
        cfg = load_config(args["config"])
        result.update(STAGES[args["stage"]](cfg, args))
        result["ok"] = True
    except Exception as exc:  # reported to the test, which decides
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
