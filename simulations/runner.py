"""Run stage 2 as a Flower simulation on this machine.

:func:`simulate` uses Flower's supported simulation path: it starts a private
``flower-superlink --simulation`` on a free 127.0.0.1 port (with its own
``FLWR_HOME``), submits the app with ``flwr run <app> apfp-local --run-config FILE
--federation-config "num-supernodes=N client-resources-num-cpus=C ..." --stream``,
waits for the run to finish, checks its status, and stops every process it started
by PID, also on error or KeyboardInterrupt. The equivalent manual commands are
listed in docs/deployment.md.

Files written to ``output_dir``: ``run-config.toml`` (what was submitted),
``flwr-run.log`` (the run's log stream), ``superlink.log``, the ServerApp's
``history.json``, ``report.json``, ``onnx/`` and ``checkpoint/``.
"""

from __future__ import annotations

import logging
import re
import time
import sys
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from nas.errors import ApfpError
from simulations.processes import CONNECTION, FlowerProcesses, FlowerProcessError
from simulations.scenario import ScenarioError, load_scenario, with_overrides

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORT_FILE = "report.json"


def app_config_keys(app_dir: Path) -> set[str]:
    """Return the run-config keys the app at ``app_dir`` declares in ``[tool.flwr.app.config]``."""
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise ScenarioError(f"{app_dir} is not a Flower app: {pyproject} is missing")
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return set(data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def build_run_config(
    scenario_run_config: Mapping[str, Any], *, run_dir: Path, output_dir: Path, data_root: Path | None,
    resume: bool, allowed: set[str],
) -> dict[str, Any]:
    """Return the run config to submit: the scenario's values plus paths and resume, all checked."""
    config = dict(scenario_run_config)
    config.update({"run-dir": str(run_dir), "output-dir": str(output_dir), "resume": bool(resume)})
    if data_root is not None:
        config["data-root"] = str(data_root)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ScenarioError(f"run-config keys {unknown} are not declared by the app; known keys: {sorted(allowed)}")
    return config


def check_run_config(config: Mapping[str, Any], scenario_name: str) -> None:
    """Raise :class:`ScenarioError` for run-config values the ServerApp or a ClientApp would reject.

    Checks the server settings (including failure injection and differential privacy)
    and that every name in ``device-profiles`` is a known profile, so a bad value fails
    here, with its name, instead of inside the Flower run.
    """
    from fl_server.app import ServerSettings
    from hw_profiles import load_profile

    try:
        ServerSettings.from_run_config(config)
        for name in str(config.get("device-profiles", "")).split(","):
            if name.strip():
                load_profile(name.strip())
    except ApfpError as error:
        raise ScenarioError(f"scenario {scenario_name!r}: {error}") from None


def simulate(
    scenario_path: str | Path,
    *,
    run_dir: str | Path,
    output_dir: str | Path,
    data_root: str | Path | None = None,
    resume: bool = False,
    overrides: Mapping[str, Any] | None = None,
    app_dir: str | Path | None = None,
    timeout_s: float | None = None,
) -> Path:
    """Run the federated search of a scenario as a Flower simulation; return the report path.

    ``scenario_path`` is a scenario file or a built-in name (``digits``,
    ``retinamnist``); ``overrides`` map scenario keys to values (TOML text or
    Python values). ``run_dir`` is the stage-1 run directory; ``data_root`` the
    folder with dataset files (MedMNIST). ``resume`` continues the run in
    ``output_dir`` from its last checkpoint. ``app_dir`` is the Flower app to submit
    (default: this repository). ``timeout_s`` bounds the wait for the run (None:
    no bound). Raises :class:`FlowerProcessError` if the run fails, naming the log.
    """
    scenario = with_overrides(load_scenario(scenario_path), overrides)
    app = Path(app_dir).resolve() if app_dir is not None else REPO_ROOT
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "run.json").is_file():
        raise ScenarioError(f"{run_dir} is not a stage-1 run directory (no run.json); run `apfp-nas pretrain` first")
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    config = build_run_config(
        scenario.run_config, run_dir=run_dir, output_dir=output,
        data_root=Path(data_root).resolve() if data_root is not None else None, resume=resume,
        allowed=app_config_keys(app),
    )
    check_run_config(config, scenario.name)
    config_file = output / "run-config.toml"
    config_file.write_text(tomli_w.dumps(config), encoding="utf-8")
    report = output / REPORT_FILE
    # A failed run must not lose an earlier report, so the old one stays in place and
    # the check below requires a report written after this run started.
    started_at = time.time()
    logger.info("simulating scenario %r (%s) with %s", scenario.name, scenario.path, scenario.federation_config())

    run_log = output / "flwr-run.log"
    offset = run_log.stat().st_size if run_log.exists() else 0
    with FlowerProcesses(output, simulation=True) as flower:
        stream = flower.spawn(
            [flower_cli(), "run", str(app), CONNECTION, "--run-config", str(config_file),
             "--federation-config", scenario.federation_config(), "--stream"],
            "flwr-run.log",
        )
        flower.watch([stream], timeout_s)
        with open(run_log, "rb") as handle:
            handle.seek(offset)
            log_text = handle.read().decode("utf-8", errors="replace")
        match = re.search(r"Successfully started run (\d+)", log_text)
        if match is None:
            raise FlowerProcessError(f"`flwr run` did not start a run; see {output / 'flwr-run.log'}:\n"
                                     f"{log_text[-2000:]}")
        status = flower.run_status(int(match.group(1)))
    if status != "finished:completed":
        cause = last_error_line(run_log.read_text("utf-8", errors="replace")[offset:])
        raise FlowerProcessError(
            f"run {match.group(1)} ended with status {status!r}: {cause}; see {output / 'flwr-run.log'}"
        )
    history = (output / "history.json")
    if not report.is_file() or not history.is_file() or report.stat().st_mtime < started_at:
        raise FlowerProcessError(f"run finished but wrote no report in {output}; see {output / 'flwr-run.log'}")
    return report


def last_error_line(log_text: str) -> str:
    """Return the last line of a Flower log that names an exception, or a hint to read the log."""
    pattern = re.compile(r"^\s*(?:[\w.]+(?:Error|Exception)|[\w.]*ApfpError)\b.*$")
    lines = [line.strip() for line in log_text.splitlines() if pattern.match(line)]
    return lines[-1] if lines else "no error message in the log"


def flower_cli() -> str:
    from simulations.processes import executable

    return executable("flwr")
