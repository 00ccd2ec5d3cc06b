"""The command line end to end: train, report, resume, spectrum, recipes (sweeps: test_reliability.py)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from eoskeras.cli.main import main
from eoskeras.runs import layout
from eoskeras.runs.files import read_jsonl
from clitools import cli, eoskeras_process, trajectory, wait_for_step

# A quickstart short enough for tests, with every artifact still produced.
SHORT = ("--set", "training.max_steps=20", "--set", "curvature.every=5", "--set", "flatness.trace_samples=12",
         "--set", "flatness.density_lanczos_steps=10", "--set", "flatness.noise_samples=3")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = cli("train", "quickstart", *SHORT, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Flatness at the end of training" in result.output
    return out


def test_train_produces_every_artifact(short_run: Path):
    for name in (layout.RECIPE, layout.ENVIRONMENT, layout.METRICS_JSONL, layout.METRICS_CSV, layout.CURVATURE,
                 layout.RESULT, layout.DENSITY, "checkpoints/state.json"):
        assert (short_run / name).is_file(), name
    assert sorted(p.name for p in (short_run / layout.PLOTS).glob("*.png")) == [
        "density.png", "eigenvalues.png", "loss_accuracy.png", "sharpness.png", "similarity.png"]
    assert list((short_run / layout.TENSORBOARD).rglob("events.out.tfevents.*"))
    curvature = read_jsonl(short_run / layout.CURVATURE)
    assert [c["step"] for c in curvature] == [0, 5, 10, 15, 20]
    assert all(c["criterion"] == "residual" and c["eig_residual"] <= 1e-3 for c in curvature if c["converged"])
    # The default retention: the first, the latest and every 20th measurement's vectors, in float16.
    assert sorted(p.name for p in (short_run / layout.EIGENVECTORS).iterdir()) == [
        "step_0000000.npy", "step_0000020.npy"]
    assert np.load(short_run / layout.eigenvector_file(20)).dtype == np.float16
    assert [p.name for p in (short_run / layout.CHECKPOINTS).glob("state_*.npz")] == ["state_0000020.npz"]
    result = json.loads((short_run / layout.RESULT).read_text())
    assert result["status"] == "max_steps" and result["stop_step"] == 20
    assert result["lr"] == pytest.approx(1.5 * 2 / result["initial_sharpness"])
    assert result["lr_rule"].startswith("lr = lr_relative x threshold_numerator / lambda_max(H)")
    assert result["curvature_measurements"] == len(curvature)
    assert result["curvature_unconverged"] == sum(not c["converged"] for c in curvature)
    assert isinstance(result["flatness"]["eig_converged"], bool)
    assert set(result["flatness"]) >= {"lambda_max", "trace", "rho_sharpness", "noise_sharpness", "test_accuracy",
                                       "accuracy_gap", "hessian"}
    rows = read_jsonl(short_run / layout.METRICS_JSONL)
    assert rows[-1]["step"] == 20 and all(r["loss"] > 0 for r in rows)
    assert (short_run / layout.RECIPE).read_text().startswith("# resolved learning rate: ")
    env = json.loads((short_run / layout.ENVIRONMENT).read_text())
    assert env["seed"] == 0 and env["strategy"] == "default" and env["packages"]["tensorflow"]


def test_report_rerenders_from_the_files_alone(short_run: Path):
    for png in (short_run / layout.PLOTS).glob("*.png"):
        png.unlink()
    result = cli("report", str(short_run), "--json")
    assert result.exit_code == 0
    summary = json.loads(result.output)
    assert summary["status"] == "max_steps"
    assert len(list((short_run / layout.PLOTS).glob("*.png"))) == 5


def test_an_existing_run_directory_is_never_overwritten(short_run: Path):
    before = {p: p.stat().st_mtime_ns for p in short_run.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["train", "quickstart", *SHORT, "--out", str(short_run)])
    assert result.exit_code == 2
    assert "--resume" in result.output and "--overwrite" in result.output
    assert {p: p.stat().st_mtime_ns for p in short_run.rglob("*") if p.is_file()} == before


def test_spectrum_of_a_run_and_of_the_demo(short_run: Path):
    result = cli("spectrum", str(short_run), "--top-k", "3", "--trace-hvps", "9", "--json")
    assert result.exit_code == 0
    spectrum = json.loads(result.output)
    flatness = json.loads((short_run / layout.RESULT).read_text())["flatness"]
    assert spectrum["eigenvalues"][0] == pytest.approx(flatness["lambda_max"], rel=1e-3)
    demo = cli("spectrum", "--top-k", "2", "--trace-hvps", "6", "--examples", "200")
    assert demo.exit_code == 0 and "Hessian spectrum: demo network" in demo.output


def test_spectrum_of_the_gauss_newton_and_per_layer(short_run: Path):
    result = cli("spectrum", str(short_run), "--operator", "ggn", "--layers", ".", "--top-k", "2",
                 "--trace-hvps", "9")
    assert result.exit_code == 0, result.output
    assert "vs Hessian lambda_max" in result.output and "restricted to each layer" in result.output
    written = json.loads((short_run / layout.spectrum_file("ggn")).read_text())
    assert (short_run / layout.PLOTS / "spectrum_ggn.png").stat().st_size > 10_000
    assert written["operator"] == "ggn" and 0 < written["eigenvalues"][0] <= written["hessian_lambda_max"] * 1.5
    assert written["ratio_to_hessian"] == pytest.approx(written["eigenvalues"][0] / written["hessian_lambda_max"])
    assert [row["layer"] for row in written["layers"]] == ["dense1", "dense2", "logits"]
    # Each layer's block is a principal submatrix of a PSD matrix: its λ_max is at most the whole one.
    assert all(0 < row["lambda_max"] <= written["eigenvalues"][0] * (1 + 1e-4) for row in written["layers"])
    bad = cli("spectrum", str(short_run), "--layers", "lstm")
    assert bad.exit_code == 2 and "--layers" in bad.output and "allowed: dense1, dense2, logits" in bad.output


def test_full_eigenvector_history_on_request_with_similarities_exact_to_1e3(tmp_path):
    out = tmp_path / "full"
    result = cli("train", "quickstart", "--set", "training.max_steps=12", "--set", "curvature.every=3",
                 "--set", "curvature.vectors_every=1", "--set", "curvature.auto_k=0.9", "--set", "flatness.enabled=false",
                 "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    from eoskeras.curvature.similarity import subspace_similarity

    curvature = read_jsonl(out / layout.CURVATURE)
    stored = {c["step"]: np.load(out / layout.eigenvector_file(c["step"])).astype(np.float64) for c in curvature}
    assert sorted(stored) == [0, 3, 6, 9, 12] and all(v.dtype == np.float64 for v in stored.values())
    for c in curvature:  # the logged similarities, recomputed from the float16 files
        assert abs(subspace_similarity(stored[0], stored[c["step"]]) - c["similarity_first"]) < 1e-3
        # auto-k: every eigenvalue above 0.9 x threshold is tracked, and one more
        assert c["num_above"] == sum(e >= 0.9 * c["threshold"] for e in c["eigenvalues"])
        assert c["top_k"] == len(c["eigenvalues"]) > c["num_above"] or c["top_k"] == 64
    assert max(c["num_above"] for c in curvature) >= 1  # 0 only during the learning-rate warm-up
    assert (out / layout.PLOTS / "sharpness.png").is_file()


def test_the_eigenvalue_criterion_from_a_recipe_reaches_the_monitor_and_its_records(tmp_path):
    out = tmp_path / "eigenvalue"
    result = cli("train", "quickstart", "--set", "training.max_steps=10", "--set", "curvature.every=5",
                 "--set", "curvature.criterion=eigenvalue", "--set", "flatness.enabled=false", "--out", str(out),
                 "--quiet")
    assert result.exit_code == 0, result.output
    curvature = read_jsonl(out / layout.CURVATURE)
    assert [c["criterion"] for c in curvature] == ["eigenvalue"] * 3 and all(c["converged"] for c in curvature)
    assert "criterion: eigenvalue" in (out / layout.RECIPE).read_text()


def test_landscape_of_a_run_at_start_middle_and_end(short_run: Path):
    before = {p: p.read_bytes() for p in (short_run / layout.CHECKPOINTS).rglob("*") if p.is_file()}
    result = cli("landscape", str(short_run), "--directions", "eig", "--span", "0.2", "--points", "5")
    assert result.exit_code == 0, result.output
    record = json.loads((short_run / layout.LANDSCAPE / "landscape_eig.json").read_text())
    assert [s["step"] for s in record["slices"]] == [0, 10, 20]
    curvature = {c["step"]: c for c in read_jsonl(short_run / layout.CURVATURE)}
    for s in record["slices"]:
        # The slices are through the weights the run had at that step: its measured top eigenvalue.
        assert s["line"]["eigenvalues"][0] == pytest.approx(curvature[s["step"]]["lambda_max"], rel=1e-3)
        assert len(s["plane"]["loss"]) == 5 and len(s["plane"]["loss"][0]) == 5
    assert (short_run / layout.PLOTS / "landscape_eig.png").stat().st_size > 10_000
    assert {p: p.read_bytes() for p in (short_run / layout.CHECKPOINTS).rglob("*") if p.is_file()} == before
    bad = cli("landscape", str(short_run), "--points", "2")
    assert bad.exit_code == 2 and "--points" in bad.output


def test_recipes_lists_every_bundled_recipe():
    result = cli("recipes", "--json")
    names = {r["name"] for r in json.loads(result.output)}
    assert {"quickstart", "cifar10_resnet", "cifar10_vgg", "fashion_mnist_mlp", "cifar10_fc_tanh_mse",
            "cifar10_clipped_adam", "mnist5k_sgd"} <= names
    assert all("error" not in r for r in json.loads(result.output))


@pytest.mark.parametrize("command", ["train", "sweep", "report", "spectrum", "recipes"])
def test_help_has_examples_or_usage(command):
    result = cli(command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output
    if command in ("train", "sweep"):
        assert "Examples:" in result.output


@pytest.mark.parametrize("args,field", [
    (("--set", "optimizer.lr_relative=-1"), "optimizer.lr_relative"),
    (("--set", "training.max_step=5"), "training.max_step"),
    (("--set", "model.name=resnet99"), "model.name"),
    (("--set", "curvature.hessian_size=5000"), "curvature.hessian_size"),
    (("--set", "training.max_steps"), "training.max_steps"),
])
def test_malformed_overrides_exit_2_naming_the_field(tmp_path, args, field):
    result = CliRunner().invoke(main, ["train", "quickstart", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert field in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_malformed_recipe_files_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {dataset: mnist5k}\nmodel: {name: fc-tanh}\noptimizer: {lr: 0.1\n")
    result = CliRunner().invoke(main, ["train", str(bad)])
    assert result.exit_code == 2 and "bad.yaml" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["train", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "missing.yaml" in result.output


def test_ctrl_c_checkpoints_and_resume_reaches_the_uninterrupted_result(tmp_path):
    args = ("quickstart", "--set", "training.max_steps=60", "--set", "flatness.enabled=false",
            "--set", "curvature.top_k=2")
    full = eoskeras_process("train", *args, "--out", str(tmp_path / "full"), "--quiet")
    assert full.wait(timeout=300) == 0, full.stdout.read()
    interrupted = eoskeras_process("train", *args, "--out", str(tmp_path / "cut"))
    wait_for_step(interrupted, 24)
    interrupted.send_signal(signal.SIGINT)
    output = interrupted.communicate(timeout=120)[0]
    assert interrupted.returncode == 130, output
    result = json.loads((tmp_path / "cut" / layout.RESULT).read_text())
    assert result["status"] == "interrupted" and result["stop_step"] < 60
    assert "interrupted" in output  # the partial report
    resumed = eoskeras_process("train", *args, "--out", str(tmp_path / "cut"), "--resume", "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert trajectory(tmp_path / "cut") == trajectory(tmp_path / "full")
