"""rexnet-plugin bench FOLDER: every path the folder and the CPU allow is timed, the
rest named with the reason. Never the speed (benchmarks/run.py measures that)."""

import pytest

from rexnet_plugin.cli import main
from rexnet_plugin.deploy import runtime
from rexnet_plugin.deploy.bench import time_folder


def test_each_path_of_the_folder_is_timed_or_says_why_not(reference_export):
    rows = {row["path"]: row for row in time_folder(reference_export[0], batches=(1, 3),
                                                    warmup=1, repeats=2, threads=1,
                                                    log=lambda *_: None)}
    runnable = {"paddle fp32": True, "onnx fp32": True,
                "paddle bf16": runtime.bf16_supported(),
                "openvino fp32": runtime.openvino_available(),
                "openvino bf16": runtime.openvino_available() and runtime.bf16_supported()}
    assert set(rows) == set(runnable)
    for path, runs in runnable.items():
        if runs:
            assert rows[path]["batch 1"] > 0 and rows[path]["batch 3"] > 0
        else:
            assert rows[path]["skipped"]  # the reason, e.g. "needs ... AVX512-BF16"


def test_the_command_prints_the_table_and_refuses_a_folder_without_a_model(
        reference_export, tmp_path, capsys):
    assert main(["bench", str(reference_export[0]), "--batch", "2", "--warmup", "0",
                 "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "paddle fp32" in out and "batch 2" in out
    assert main(["bench", str(tmp_path)]) == 2
    assert "is not a model folder" in capsys.readouterr().err


@pytest.mark.parametrize("repeats", [0, -1])
def test_bad_repeats_are_named(reference_export, capsys, repeats):
    assert main(["bench", str(reference_export[0]), "--repeats", str(repeats)]) == 2
    assert "--repeats" in capsys.readouterr().err
