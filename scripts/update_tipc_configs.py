"""Keep tipc_configs/*.txt in step with the variant table.

    python scripts/update_tipc_configs.py          # rewrite the files that drifted
    python scripts/update_tipc_configs.py --check  # exit 1 if any file would change

PaddleClas checks a model end to end with its TIPC chain
(test_tipc/test_train_inference_python.sh <config> lite_train_lite_infer):
train, eval, export, then deploy/python/predict_cls.py. It reads its config
by line number, so the files hold no comments; TEMPLATE below is the one
source, stamped per variant (rexnet_plugin.zoo.VARIANTS) and per device:

* <variant>_train_infer_python.txt      GPU (PaddleClas's layout: one GPU, then two)
* <variant>_train_infer_python_cpu.txt  CPU

Both run the shipped PaddleClas config from ppcls_configs/ in the PaddleClas
root (rexnet-plugin configs --dest ppcls_configs), and handle this
PaddleClas's traps (docs/deployment.md, "TIPC"): "python" rather than
python3.7; Global.output_dir pointed at <save_log>/<model> through the
unused extra train parameter (line 13), where the chain looks for train.log
and the checkpoint; the export's device on the CPU; predict_cls.py with the
variant's own preprocessing (PIL bicubic resize and crop, as inference.yml).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIPC_DIR = ROOT / "tipc_configs"
# The chain trains at DataLoader.Train.sampler.batch_size 8 (TEMPLATE) on one
# device; the configs' learning rates are for 64 per GPU on 4 GPUs (their
# header), so the train line scales them linearly, as that header says.
TIPC_BATCH = 8
CONFIG_GPUS = 4

# @field@ is stamped; everything else is literal (${save_log} and ${model_name}
# are the chain's own shell variables, expanded when it runs the command).
TEMPLATE = """\
===========================train_params===========================
model_name:@name@
python:python
gpu_list:@gpu_list@
-o Global.device:@device@
-o Global.auto_cast:null
-o Global.epochs:lite_train_lite_infer=2|whole_train_whole_infer=120
-o Global.output_dir:./output/
-o DataLoader.Train.sampler.batch_size:8
-o Global.pretrained_model:null
train_model_name:latest
train_infer_img_dir:./dataset/ILSVRC2012/val
-o Global.output_dir:${save_log}/${model_name}
##
trainer:norm_train
norm_train:tools/train.py -c @config@ @scaled_lr@ -o Global.seed=1234 -o DataLoader.Train.sampler.shuffle=False -o DataLoader.Train.loader.num_workers=0 -o DataLoader.Train.loader.use_shared_memory=False -o Global.eval_during_train=False -o Global.save_interval=2
pact_train:null
fpgm_train:null
distill_train:null
to_static_train:-o Global.to_static=True
null:null
##
===========================eval_params===========================
eval:tools/eval.py -c @config@
null:null
##
===========================infer_params==========================
-o Global.save_inference_dir:./inference
-o Global.pretrained_model:
norm_export:tools/export_model.py -c @config@ -o Global.device=@device@
quant_export:null
fpgm_export:null
distill_export:null
kl_quant:null
export2:null
pretrained_model_url:@pretrained_url@
infer_model:../inference/
infer_export:True
infer_quant:False
inference:python/predict_cls.py -c configs/inference_cls.yaml @preprocess@
-o Global.use_gpu:@use_gpu@
-o Global.enable_mkldnn:@mkldnn@
-o Global.cpu_num_threads:1
-o Global.batch_size:1
-o Global.use_tensorrt:False
-o Global.use_fp16:False
-o Global.inference_model_dir:../inference
-o Global.infer_imgs:../dataset/ILSVRC2012/val/ILSVRC2012_val_00000001.JPEG
-o Global.save_log_path:null
-o Global.benchmark:False
null:null
null:null
===========================train_benchmark_params==========================
batch_size:64
fp_items:fp32|fp16
epoch:1
model_type:norm_train|to_static_train
num_workers:12
--profiler_options:batch_range=[10,20];state=GPU;tracer_option=Default;profile_path=model.profile
flags:FLAGS_eager_delete_tensor_gb=0.0;FLAGS_fraction_of_gpu_memory_to_use=0.98;FLAGS_conv_workspace_size_limit=4096
===========================infer_benchmark_params==========================
random_infer_input:[{float32,[3,@crop_size@,@crop_size@]}]
"""

# The chain's CPU and GPU settings: training devices, the export's device,
# and the inference runs (GPU, then CPU as PaddleClas's own files do).
DEVICES = {
    "gpu": {"suffix": "", "gpu_list": "0|0,1", "device": "gpu", "use_gpu": "True|False",
            "mkldnn": "False"},
    "cpu": {"suffix": "_cpu", "gpu_list": "-1", "device": "cpu", "use_gpu": "False",
            "mkldnn": "True|False"},
}


def filename(name: str, device: str) -> str:
    return f"{name}_train_infer_python{DEVICES[device]['suffix']}.txt"


def scaled_lr(name: str) -> str:
    """-o overrides of the config's learning rates for TIPC's batch."""
    import yaml
    config = yaml.safe_load((ROOT / "ppcls_configs" / f"{name}.yaml").read_text())
    lr = config["Optimizer"]["lr"]
    scale = TIPC_BATCH / (config["DataLoader"]["Train"]["sampler"]["batch_size"] * CONFIG_GPUS)
    return " ".join(f"-o Optimizer.lr.{key}={lr[key] * scale:.6g}"
                    for key in ("learning_rate", "warmup_start_lr", "eta_min"))


def stamp(name: str, device: str) -> str:
    """The TIPC config of variant ``name`` for ``device``."""
    from rexnet_plugin.zoo import VARIANTS
    v = VARIANTS[name]
    t = v.eval_transform
    paddleclas = v.weights.get("paddleclas")
    # predict_cls.py's stock config resizes with cv2 (bilinear), 256, crop 224:
    # overridden with the variant's eval transform, as inference.yml has it.
    preprocess = " ".join([
        f"-o PreProcess.transform_ops.0.ResizeImage.resize_short={t.resize_short}",
        f"-o PreProcess.transform_ops.0.ResizeImage.interpolation={t.interpolation}",
        "-o PreProcess.transform_ops.0.ResizeImage.backend=pil",
        f"-o PreProcess.transform_ops.1.CropImage.size={t.crop_size}"])
    fields = {"name": name, "config": f"ppcls_configs/{name}.yaml",
              "pretrained_url": paddleclas.url if paddleclas else "null",
              "preprocess": preprocess, "crop_size": str(t.crop_size),
              "scaled_lr": scaled_lr(name),
              **{k: v for k, v in DEVICES[device].items() if k != "suffix"}}
    text = TEMPLATE
    for key, value in fields.items():
        text = text.replace(f"@{key}@", value)
    if "@" in text:
        raise SystemExit(f"TEMPLATE has an unknown field: {text[text.index('@'):][:40]}")
    return text


def expected_configs() -> dict[Path, str]:
    from rexnet_plugin.zoo import VARIANTS
    return {TIPC_DIR / filename(name, device): stamp(name, device)
            for name in VARIANTS for device in DEVICES}


def main() -> int:
    from generated_files import sync
    return sync(expected_configs(), list(TIPC_DIR.glob("*.txt")))


if __name__ == "__main__":
    sys.exit(main())
