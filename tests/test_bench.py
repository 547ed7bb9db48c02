"""rexnet-plugin bench FOLDER: every path the folder and the CPU allow is timed, the
rest named with the reason. Never the speed (benchmarks/run.py measures that)."""

import re

import pytest

from rexnet_plugin.cli import main
from rexnet_plugin.deploy import runtime


def test_each_path_of_the_folder_is_timed_or_says_why_not(reference_export, capsys):
    assert main(["bench", str(reference_export[0]), "--batch", "1", "3", "--warmup", "1",
                 "--repeats", "2", "--threads", "1"]) == 0
    lines = {m[1]: m[2] for m in re.finditer(r"^  (\w+ \w+) +(.*)$", capsys.readouterr().out,
                                             re.MULTILINE)}
    runnable = {"paddle fp32": True, "onnx fp32": True,
                "paddle bf16": runtime.bf16_supported(),
                "openvino fp32": runtime.openvino_available(),
                "openvino bf16": runtime.openvino_available() and runtime.bf16_supported()}
    assert set(lines) == set(runnable)
    for path, runs in runnable.items():
        if runs:
            times = re.fullmatch(r"batch 1 +([\d.]+)  batch 3 +([\d.]+)", lines[path])
            assert times and float(times[1]) > 0 and float(times[2]) > 0, lines[path]
        else:
            assert lines[path].startswith("skipped: "), lines[path]  # with the reason


def test_a_folder_without_a_model_is_refused(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    assert "is not a model folder" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--repeats", "0"], ["--batch", "0"]])
def test_bad_options_are_named(reference_export, capsys, option):
    assert main(["bench", str(reference_export[0]), *option]) == 2
    assert f"{option[0]} 0: expected an integer of at least 1" in capsys.readouterr().err
