"""The side-by-side benchmark: a smoke run with tiny repeats checks the report, never speed."""

import json
import statistics
import sys

import numpy as np
import pytest

from rexnet_plugin.extras import missing

from conftest import REFERENCE_NPZ, ROOT, reference_path
from rexnet_plugin.deploy import bench, runtime
from rexnet_plugin.deploy.bench import MODES, Mode, run_benchmark, write_results

sys.path.insert(0, str(ROOT / "benchmarks"))
import agreement  # noqa: E402  (benchmarks/: development tools, not the package)
import report  # noqa: E402

TINY_TRAIN = Mode("dygraph_train_b2", "dygraph_train", 2, 64, goal=0.85)


@pytest.fixture(scope="module")
def smoke_doc(tmp_path_factory):
    """Paddle Inference fp32 and a tiny training step, 3 timed batches each; bf16
    skipped as on a CPU without the instructions (the parent decides that)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("rexnet_plugin.deploy.runtime.bf16_supported", lambda: False)
        doc = run_benchmark("ReXNet_1_0", modes=[MODES["paddle_fp32_b1"], MODES["paddle_bf16_b1"],
                                                 TINY_TRAIN],
                            warmup=1, repeats=3, threads=1, log=lambda *_: None)
    out = tmp_path_factory.mktemp("results")
    return doc, (write_results(doc, out), report.write_markdown(doc, out))


def test_report_names_the_run_and_the_machine(smoke_doc):
    doc, _ = smoke_doc
    assert doc["schema"] == bench.SCHEMA
    assert doc["variant"] == "ReXNet_1_0" and doc["settings"]["repeats"] == 3
    assert doc["outputs_max_abs_diff"] < 1e-4  # same weights, same outputs
    machine = doc["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1
    assert machine["versions"]["paddlepaddle"] and machine["versions"]["paddleclas"]
    assert [m["key"] for m in doc["modes"]] == ["paddle_fp32_b1", "paddle_bf16_b1", "dygraph_train_b2"]
    assert "AVX512-BF16" in doc["modes"][1]["skipped"]


@pytest.mark.parametrize("index", [0, 2])
def test_statistics_and_ratio_come_from_the_measured_batches(smoke_doc, index):
    doc, _ = smoke_doc
    mode = doc["modes"][index]
    medians = {}
    for impl in bench.IMPLEMENTATIONS:
        stats = mode["results"][impl]
        per_image = [t / mode["batch"] for t in stats["batches_ms"]]
        assert len(per_image) == 3
        ms = stats["ms_per_image"]
        assert ms["median"] == pytest.approx(statistics.median(per_image), rel=1e-3)
        assert ms["min"] <= ms["q1"] <= ms["median"] <= ms["q3"] <= ms["max"]
        assert stats["images_per_s"] == pytest.approx(1e3 / ms["median"])
        flops = 2 * mode["flop_factor"] * mode["macs_per_image"] * stats["images_per_s"]
        assert stats["gflop_per_s"] == pytest.approx(flops / 1e9)
        assert stats["cpu_ms_per_image"] > 0 and stats["page_faults_per_batch"] >= 0
        assert stats["peak_rss_mb"] >= stats["rss_before_model_mb"] > 0
        medians[impl] = ms["median"]
    assert mode["ratio"] == pytest.approx(medians["ours"] / medians["builtin"])
    assert mode["goal_met"] == (mode["ratio"] <= mode["goal"])


def test_macs_and_flop_factor_follow_the_mode(smoke_doc):
    doc, _ = smoke_doc
    infer, train = doc["modes"][0], doc["modes"][2]
    assert infer["flop_factor"] == 1 and train["flop_factor"] == bench.TRAIN_FLOP_FACTOR
    assert infer["macs_per_image"] > train["macs_per_image"] > 0  # 224 vs 64 pixels


def test_json_and_markdown_are_written(smoke_doc):
    doc, (json_path, md_path) = smoke_doc
    assert json.loads(json_path.read_text()) == doc
    text = md_path.read_text()
    assert text == report.markdown_report(doc)
    assert "| Paddle Inference oneDNN fp32 | 1 | 224² |" in text
    assert f"**{doc['modes'][0]['ratio']:.2f}** (goal ≤ 0.75)" in text
    assert "skipped" in text and doc["machine"]["cpu_model"] in text
    assert not list(json_path.parent.glob(".*.tmp"))


def test_lite_variants_have_no_builtin_to_compare_with():
    with pytest.raises(ValueError, match="no built-in lite"):
        run_benchmark("ReXNetLite_1_0", modes=[MODES["paddle_fp32_b1"]], log=lambda *_: None)


def test_unknown_modes_are_named():
    with pytest.raises(ValueError, match="unknown mode.*paddle_fp32_b1"):
        bench.parse_modes("paddle_fp32_b1,paddle_fp16_b1")


def test_sample_photos_are_a_few_dozen_normalised_images():
    photos = agreement.sample_photos()
    assert photos.shape == (40, 3, 224, 224) and photos.dtype == np.float32
    assert np.isfinite(photos).all() and -3 < photos.mean() < 3
    assert len({p.tobytes() for p in photos}) == 40  # crops and flips all differ


@pytest.mark.skipif(not runtime.bf16_supported(), reason="this CPU has no AVX512-BF16/AMX-BF16")
def test_bf16_agreement_reports_both_reference_models():
    rows = {row["variant"]: row for row in agreement.bf16_agreement(reference_path("rexnet_v1_1_0.npz").parent)}
    assert set(rows) == set(REFERENCE_NPZ)  # variants recognised from the weights' shapes
    for row in rows.values():
        for key, images in (("reference_inputs", 3), ("sample_photos", 40)):
            a = row[key]
            assert a["images"] == images and 0 <= a["top1_agree"] <= images
            assert a["top1_agreement"] == pytest.approx(a["top1_agree"] / images)
            assert (a["largest_flipped_margin"] is None) == (a["top1_agree"] == images)
            assert 0 < a["max_abs_logit_diff"] < a["fp32_logit_range"]  # bf16 ran, and is close
    assert rows["ReXNet_1_0"]["sample_photos"]["distinct_fp32_top1"] > 1  # inputs matter


def test_int8_mode_runs_ours_quantized_against_the_builtins_fp32_paddle_inference():
    """A tiny int8 mode (batch 2, 64x64, 3 timed batches): the report, never the speed."""
    pytest.importorskip("onnxruntime.quantization", reason=missing("onnxruntime"))
    tiny = Mode("onnxruntime_int8_b2", "onnxruntime", 2, 64, "int8", goal=0.5,
                builtin_runtime="paddle_inference")
    doc = run_benchmark("ReXNet_1_0", modes=[tiny], warmup=1, repeats=3, threads=1,
                        log=lambda *_: None)
    mode, = doc["modes"]
    assert mode["title"] == "ONNX Runtime int8 (quantize); built-in: Paddle Inference oneDNN fp32"
    medians = {impl: mode["results"][impl]["ms_per_image"]["median"] for impl in bench.IMPLEMENTATIONS}
    assert mode["ratio"] == pytest.approx(medians["ours"] / medians["builtin"])
    assert mode["goal_met"] == (mode["ratio"] <= 0.5)
    assert all(len(mode["results"][i]["batches_ms"]) == 3 for i in bench.IMPLEMENTATIONS)
    summary = report.int8_summary(doc)
    assert f"**{mode['ratio']:.2f}x** the built-in's latency (goal ≤ 0.50" in summary
    # The built-in's fp32 Paddle Inference of this mode is an fp32 run of its batch size.
    assert "built-in, Paddle Inference oneDNN fp32" in report.fastest_fp32(doc)
    doc["peak"] = {"threads": 1, "measured": {"fp32_gflop_per_s": {"best": 100.0},
                                              "int8_gop_per_s": {"best": 400.0}}, "nominal": None}
    rate = mode["results"]["ours"]["gflop_per_s"]
    assert f"| ours, ONNX Runtime int8 | 2 | {rate:.0f} | 400 | {100 * rate / 400:.0f}% |" in \
        report.limits_table(doc)


def test_int8_modes_are_listed_with_the_issue_goal():
    for batch in (1, 8):
        mode = MODES[f"onnxruntime_int8_b{batch}"]
        assert (mode.precision, mode.goal, mode.builtin_runtime, mode.batch) == \
            ("int8", 0.5, "paddle_inference", batch)
