"""The apfp-nas command line: help text, one-line errors, adding a profiled device."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fl_server.cli import build_parser, main
from fl_server.run_dir import RunDirectory


@pytest.mark.parametrize("command", ["pretrain", "simulate", "demo", "profile"])
def test_help_lists_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--no-progress" in text
    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in subparser._actions:
        if action.option_strings and action.help != "==SUPPRESS==":
            assert action.help, f"{command} {action.option_strings} has no help text"


def test_invalid_setting_is_one_line_error(tmp_path, capsys):
    status = main(["pretrain", "--epochs", "0", "--output", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert status == 2
    assert "--epochs" in error
    assert "Traceback" not in error
    assert not (tmp_path / "run").exists()


def test_unknown_profile_fails_before_training(tmp_path, capsys):
    status = main(["pretrain", "--profiles", "cpu-1t-fp32,no-such-device", "--output", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert status == 2
    assert "no-such-device" in error
    assert not (tmp_path / "run").exists()


def test_simulate_rejects_missing_run_dir(tmp_path, capsys):
    status = main(["simulate", "--run-dir", str(tmp_path / "absent"), "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert status == 2
    assert "apfp-nas pretrain" in error


def test_simulate_rejects_unknown_strategy_early(tiny_run_dir, tmp_path, capsys):
    status = main(["simulate", "--run-dir", str(tiny_run_dir), "--output", str(tmp_path / "out"),
                   "--set", "search-strategy=no-such-search"])
    error = capsys.readouterr().err
    assert status == 2
    assert "no-such-search" in error
    assert "annealing" in error


def test_profile_adds_device_to_run_dir(tiny_run_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run_dir)
    status = main(["profile", "--name", "test-device", "--samples", "12", "--run-dir", str(run_dir),
                   "--output", str(tmp_path / "profile"), "--add-to-run-dir", "--no-progress"])
    output = capsys.readouterr().out
    assert status == 0
    assert "Held-out quality on" in output
    run = RunDirectory.load(run_dir)
    assert "test-device" in run.profiles
    assert "test-device" in run.latency_predictors
    assert len(run.budgets["test-device"]) == 3
    assert all(b > 0 for b in run.budgets["test-device"])
    prediction = run.latency_predictors["test-device"].predict([run.space.smallest()]).mean
    assert prediction[0] > 0
    assert Path(tmp_path / "profile" / "test-device.toml").is_file()


def test_recommendation_table_shows_sample_size_and_model() -> None:
    from fl_server.summary import format_recommendations

    report = {"recommendations": [
        {"device": "cpu-1t-fp32", "budget_ms": 0.085, "predicted_accuracy": 0.919, "measured_accuracy": 0.917,
         "num_test_samples": 108, "predicted_latency_ms": 0.077, "measured_latency_ms": 0.074,
         "meets_budget": True, "source": "observed", "onnx": "onnx/cpu-1t-fp32_0.085ms.onnx"},
        {"device": "cpu-2t-fp32", "budget_ms": 0.05, "source": "infeasible", "onnx": None},
    ]}
    lines = format_recommendations(report).splitlines()
    assert lines[1].split() == ["device", "budget", "ms", "pred.", "acc", "test", "acc", "test", "n", "pred.", "ms",
                                "measured", "ms", "meets", "source", "onnx"]
    assert lines[3].split() == ["cpu-1t-fp32", "0.085", "0.919", "0.917", "108", "0.077", "0.074", "yes",
                                "observed", "onnx/cpu-1t-fp32_0.085ms.onnx"]
    assert "cpu-2t-fp32" in lines[4] and "infeasible" in lines[4]
    assert lines[5].startswith("test acc: the clients' fine-tuned copies")
