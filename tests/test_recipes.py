"""Recipe schema, validation, loading, overrides and the bundled recipes.

Fast (no TensorFlow): the whole file runs in about a second.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eoskeras.recipes import (
    RecipeError, apply_overrides, bundled_recipes, dump_recipe, load_recipe, parse_recipe,
    schema_reference,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("cifar10_clipped_adam", "cifar10_fc_tanh_mse", "cifar10_resnet", "cifar10_vgg", "digits_resnet",
           "digits_vgg", "fashion_mnist_mlp", "mnist5k_sgd", "quickstart")

# The smallest valid recipe, one line per top-level key; cases swap lines.
BASE = {"name": "t", "data": "{dataset: mnist5k}", "model": "{name: fc-tanh}",
        "optimizer": "{lr: 0.1}"}


def doc(**lines: str | None) -> str:
    """YAML text of BASE with some top-level lines replaced, added or (None) removed."""
    merged = {**BASE, **lines}
    return "".join(f"{key}: {value}\n" for key, value in merged.items() if value is not None)


def write(tmp_path: Path, content: str | bytes, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# ---------------------------------------------------------------- bundled recipes

def test_bundled_recipes_are_listed() -> None:
    assert tuple(bundled_recipes()) == BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_recipe_validates_and_round_trips(name: str) -> None:
    path = bundled_recipes()[name]
    recipe = load_recipe(path)
    assert recipe.name == name == path.stem
    assert parse_recipe(recipe.to_dict()) == recipe
    assert parse_recipe(yaml.safe_load(dump_recipe(recipe))) == recipe
    assert load_recipe(path, ["training.max_steps=1"]).training.max_steps == 1  # smoke runs
    header = path.read_text().splitlines()[:8]
    assert header[0].startswith("# ")
    assert any(line.startswith("# Runtime: " + recipe.runtime) for line in header)
    assert any(line.startswith("# Setup: ") for line in header)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_recipe_trains_above_the_threshold(name: str) -> None:
    optimizer = load_recipe(bundled_recipes()[name]).optimizer
    # Absolute rates are justified in the file; relative ones must exceed 1.
    assert optimizer.lr is not None or optimizer.lr_relative > 1


def test_quickstart_is_what_the_readme_promises() -> None:
    recipe = load_recipe(bundled_recipes()["quickstart"])
    assert (recipe.data.dataset, recipe.data.train_size, recipe.model.name) == (
        "mnist5k", 1000, "fc-tanh")
    assert (recipe.loss, recipe.optimizer.name, recipe.curvature.top_k) == ("mse", "gd", 5)
    assert recipe.curvature.hessian_size == 1000 and recipe.flatness.enabled


def test_validation_imports_neither_tensorflow_nor_keras() -> None:
    code = ("import sys\n"
            "from eoskeras.recipes import bundled_recipes, load_recipe\n"
            "print(len([load_recipe(path) for path in bundled_recipes().values()]))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert out[:2] == [str(len(BUNDLED)), "[]"]


# ------------------------------------------------------------ values and defaults

def test_defaults_are_resolved() -> None:
    recipe = parse_recipe(yaml.safe_load(doc(loss="mse")))
    assert recipe.data.labels == "onehot"
    assert recipe.data.train_size == 4000 and recipe.data.test_size == 1000
    assert recipe.curvature.hessian_size == 4000
    assert recipe.curvature.micro_batch_size == recipe.training.physical_batch_size == 1000
    assert recipe.training.eval_test_every == recipe.training.log_every
    assert recipe.output.dir == "runs/t"
    assert recipe.optimizer.warmup_steps == 2 and recipe.optimizer.momentum is None
    assert parse_recipe(yaml.safe_load(doc())).data.labels == "integer"


def test_optimizer_defaults_fill_only_what_it_reads() -> None:
    adam = parse_recipe(yaml.safe_load(doc(optimizer="{name: adam, lr: 1e-3}"))).optimizer
    assert (adam.beta_1, adam.beta_2, adam.epsilon, adam.momentum) == (0.9, 0.999, 1e-8, None)
    rms = parse_recipe(yaml.safe_load(doc(optimizer="{name: rmsprop, lr: 1e-3}"))).optimizer
    assert (rms.beta_1, rms.beta_2) == (None, 0.9)


def test_yaml_11_numerals_and_ints_are_accepted_as_numbers() -> None:
    # PyYAML loads `1e-3` (no dot) as the string "1e-3".
    data = yaml.safe_load(doc(optimizer="{lr: 1e-3}", training="{max_steps: 5e3}"))
    assert data["optimizer"]["lr"] == "1e-3"
    recipe = parse_recipe(data)
    assert recipe.optimizer.lr == 0.001 and recipe.training.max_steps == 5000
    assert parse_recipe(yaml.safe_load(doc(optimizer="{lr: 1}"))).optimizer.lr == 1.0


def test_output_dir_is_normalised() -> None:
    recipe = parse_recipe(yaml.safe_load(doc(output="{dir: runs//a/./b}")))
    assert recipe.output.dir == "runs/a/b"


def test_recipe_is_frozen_hashable_and_picklable() -> None:
    recipe = parse_recipe(yaml.safe_load(doc(model="{name: fc-tanh, options: {width: 8}}")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.seed = 3  # type: ignore[misc]
    assert recipe.model.options["width"] == 8
    assert pickle.loads(pickle.dumps(recipe)) == recipe
    assert len({recipe, parse_recipe(recipe.to_dict())}) == 1


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path, doc(name=None), "my-run.yaml")
    assert load_recipe(path).name == "my-run"


def test_schema_reference_lists_every_setting() -> None:
    reference = yaml.safe_load(schema_reference())
    recipe = parse_recipe(yaml.safe_load(doc()))

    def keys(mapping: dict, prefix: str = "") -> set[str]:
        return {prefix + key for key in mapping} | {
            path for key, value in mapping.items() if isinstance(value, dict) and value
            for path in keys(value, f"{prefix}{key}.")}

    assert keys(reference) == keys(recipe.to_dict())


# ---------------------------------------------------------------------- overrides

def test_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    path = bundled_recipes()["quickstart"]
    recipe = load_recipe(path, ["optimizer.lr_relative=2.5", "training.max_steps=50",
                                "model.options.depth=3", "data.dtype=float64", "seed = 7"])
    assert recipe.optimizer.lr_relative == 2.5 and recipe.training.max_steps == 50
    assert dict(recipe.model.options) == {"depth": 3, "width": 64}
    assert (recipe.data.dtype, recipe.seed) == ("float64", 7)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["optimizer.lr=-1"])
    assert err.value.path == "optimizer.lr"


def test_overrides_do_not_mutate_their_input() -> None:
    data = yaml.safe_load(doc())
    changed = apply_overrides(data, ["optimizer.lr=0.5", "flatness.enabled=true"])
    assert data["optimizer"] == {"lr": 0.1} and "flatness" not in data
    assert changed["optimizer"]["lr"] == 0.5 and changed["flatness"] == {"enabled": True}


# ---------------------------------------------------------------- error reporting

def test_error_message_format() -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(yaml.safe_load(doc(optimizer="{lr: -0.1}")))
    assert str(err.value) == "optimizer.lr: got -0.1 (a negative number); allowed: a number > 0"
    assert (err.value.path, err.value.value, err.value.allowed) == (
        "optimizer.lr", -0.1, "a number > 0")


def test_all_problems_are_reported_together() -> None:
    text = doc(seed="-1", optimizer="{lr: 0, momentum: 2}", strategy="horovod")
    with pytest.raises(RecipeError) as err:
        parse_recipe(yaml.safe_load(text))
    paths = [error.path for error in err.value.errors]
    assert paths == ["seed", "optimizer.lr", "optimizer.momentum", "strategy"]
    assert str(err.value).startswith("4 problems in the recipe:\n  - seed: got -1")
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)  # e.g. from a worker


def test_unknown_key_suggests_a_close_match() -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(yaml.safe_load(doc(optimizer="{lr: 0.1, lr_relatve: 2}")))
    assert "did you mean 'lr_relative'?" in str(err.value)


def test_missing_file_suggests_a_bundled_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "quickstrat.yaml")
    assert str(bundled_recipes()["quickstart"]) in str(err.value)


# A malformed recipe (YAML text or bytes), file or override, the path its error
# must name, and a fragment of what the message must say is allowed. FILE stands
# for the recipe file's own path; overrides apply to the valid BASE recipe.
FILE = "<file>"
CASES = [
    # numbers
    ("lr-negative", doc(optimizer="{lr: -0.1}"), "optimizer.lr", "a number > 0"),
    ("lr-zero", doc(optimizer="{lr: 0}"), "optimizer.lr", "a number > 0"),
    ("lr-text", doc(optimizer="{lr: fast}"), "optimizer.lr", "a number > 0"),
    ("lr-1e400-text", doc(optimizer="{lr: 1e400}"), "optimizer.lr", "a number > 0"),
    ("lr-1.0e+400-float", doc(optimizer="{lr: 1.0e+400}"), "optimizer.lr", "a number > 0"),
    ("lr-nan", doc(optimizer="{lr: .nan}"), "optimizer.lr", "a number > 0"),
    ("lr-nan-text", doc(optimizer="{lr: nan}"), "optimizer.lr", "a number > 0"),
    ("lr-list", doc(optimizer="{lr: [0.1]}"), "optimizer.lr", "a number > 0"),
    ("lr-and-lr-relative", doc(optimizer="{lr: 0.1, lr_relative: 2}"), "optimizer.lr",
     "exactly one of optimizer.lr"),
    ("no-learning-rate", doc(optimizer="{name: gd}"), "optimizer.lr", "exactly one of"),
    ("lr-relative-negative", doc(optimizer="{lr_relative: -2}"), "optimizer.lr_relative",
     "a number > 0"),
    ("steps-10e30", doc(training="{max_steps: 1000000000000000000000000000000}"),
     "training.max_steps", "to 1,000,000,000"),
    ("steps-bool", doc(training="{max_steps: true}"), "training.max_steps", "a whole number"),
    ("steps-fraction", doc(training="{max_steps: 1.5}"), "training.max_steps", "a whole number"),
    ("steps-zero", doc(training="{max_steps: 0}"), "training.max_steps", "from 1"),
    ("seed-negative", doc(seed="-1"), "seed", "from 0"),
    ("seed-date", doc(seed="2024-01-01"), "seed", "a whole number"),
    ("top-k-zero", doc(curvature="{top_k: 0}"), "curvature.top_k", "from 1 to 100"),
    ("top-k-101", doc(curvature="{top_k: 101}"), "curvature.top_k", "from 1 to 100"),
    ("tol-one", doc(curvature="{tol: 1}"), "curvature.tol", "in (0, 1)"),
    ("momentum-one", doc(optimizer="{name: momentum, lr: 0.1, momentum: 1.0}"),
     "optimizer.momentum", "in [0, 1)"),
    ("beta-2-one", doc(optimizer="{name: adam, lr: 0.1, beta_2: 1}"), "optimizer.beta_2",
     "in (0, 1)"),
    ("accuracy-above-one", doc(training="{stop: {train_accuracy: 1.5}}"),
     "training.stop.train_accuracy", "in (0, 1]"),
    ("divergence-factor-one", doc(training="{stop: {divergence_factor: 1}}"),
     "training.stop.divergence_factor", "> 1"),
    ("flatten-text", doc(data="{dataset: mnist5k, flatten: maybe}"), "data.flatten",
     "true or false"),
    ("rho-zero", doc(flatness="{rho: 0}"), "flatness.rho", "> 0"),
    # unknown keys and names
    ("unknown-top-level-key", doc(optimiser="{lr: 0.1}"), "optimiser", "one of the keys"),
    ("unknown-nested-key", doc(optimizer="{lr: 0.1, learning_rate: 0.1}"),
     "optimizer.learning_rate", "lr_relative"),
    ("unknown-deep-key", doc(training="{stop: {acc: 0.9}}"), "training.stop.acc",
     "train_accuracy"),
    ("non-text-key", doc(data="{dataset: mnist5k, 3: x}"), "data.3", "one of the keys"),
    ("unknown-dataset", doc(data="{dataset: cifar11}"), "data.dataset", "cifar10"),
    ("unknown-model", doc(model="{name: resnet18}"), "model.name", "resnet20_base8"),
    ("unknown-model-option", doc(model="{name: fc-tanh, options: {widht: 64}}"),
     "model.options.widht", "width"),
    ("option-not-of-model", doc(model="{name: vgg10_base8_bn, options: {depth: 3}}"),
     "model.options.depth", "options of vgg10_base8_bn"),
    ("option-bad-choice", doc(model="{name: fc-tanh, options: {activation: sigmoid}}"),
     "model.options.activation", "one of relu"),
    ("option-width-zero", doc(model="{name: fc-tanh, options: {width: 0}}"),
     "model.options.width", "a whole number"),
    ("options-a-list", doc(model="{name: fc-tanh, options: [width]}"), "model.options",
     "a mapping of model options"),
    ("bad-strategy", doc(strategy="horovod"), "strategy", "mirrored"),
    ("removed-bn-mode", doc(curvature="{bn_mode: inference}"), "curvature.bn_mode", "also_inference"),
    ("renamed-max-iterations", doc(curvature="{max_iterations: 50}"), "curvature.max_iterations", "max_hvps"),
    ("bad-also-inference", doc(curvature="{also_inference: sometimes}"), "curvature.also_inference", "true"),
    ("bad-stall-accuracy", doc(training="{stop: {stall_accuracy: 1.5}}"), "training.stop.stall_accuracy", "1"),
    ("bad-data-dtype", doc(data="{dataset: mnist5k, dtype: float16}"), "data.dtype", "float32"),
    ("bad-curvature-dtype", doc(curvature="{dtype: bfloat16}"), "curvature.dtype", "float64"),
    ("bad-hvp-mode", doc(curvature="{hvp_mode: both}"), "curvature.hvp_mode", "forward"),
    ("bad-criterion", doc(curvature="{criterion: gap}"), "curvature.criterion", "eigenvalue"),
    ("bad-loss-case", doc(loss="MSE"), "loss", "cross_entropy"),
    ("bad-runtime", doc(runtime="tpu-days"), "runtime", "cpu-minutes"),
    ("bad-subset", doc(data="{dataset: mnist5k, subset: random}"), "data.subset", "balanced"),
    ("name-escapes", doc(name="../evil"), "name", "letters, digits"),
    # structure
    ("missing-data", doc(data=None), "data", "a mapping with keys dataset"),
    ("missing-model-name", doc(model="{options: {width: 8}}"), "model.name", "fc-tanh"),
    ("section-not-mapping", doc(training="5"), "training", "a mapping with keys max_steps"),
    ("duplicate-key", doc(optimizer="{lr: 0.1, lr: 0.2}"), "optimizer.lr", "each key once"),
    ("recursive-alias", doc(extra="&x [*x]"), "extra", "one of the keys"),
    # cross-field rules
    ("hessian-above-train", doc(data="{dataset: mnist5k, train_size: 500}",
                                curvature="{hessian_size: 1000}"),
     "curvature.hessian_size", "at most data.train_size (500)"),
    ("train-above-dataset", doc(data="{dataset: mnist5k, train_size: 5000}"),
     "data.train_size", "at most 4,000"),
    ("test-above-dataset", doc(data="{dataset: cifar10, test_size: 20000}"),
     "data.test_size", "at most 10,000"),
    ("batch-above-train", doc(data="{dataset: mnist5k, train_size: 1000}",
                              training="{batch_size: 2000}"),
     "training.batch_size", "at most data.train_size"),
    ("integer-labels-with-mse", doc(data="{dataset: mnist5k, labels: integer}", loss="mse"),
     "data.labels", "onehot"),
    ("clipped-without-clip-value",
     doc(optimizer="{name: clipped_adam, lr: 0.001, clip_mode: ub}"),
     "optimizer.clip_value", "a number > 0"),
    ("clipped-without-clip-mode",
     doc(optimizer="{name: clipped_rmsprop, lr: 0.001, clip_value: 1}"),
     "optimizer.clip_mode", "ub, lb"),
    ("clip-value-with-gd", doc(optimizer="{lr: 0.1, clip_value: 1}"), "optimizer.clip_value",
     "read by clipped_rmsprop, clipped_adam"),
    ("momentum-with-gd", doc(optimizer="{lr: 0.1, momentum: 0.9}"), "optimizer.momentum",
     "null with gd"),
    ("balanced-not-divisible", doc(data="{dataset: mnist5k, train_size: 1005, subset: balanced}"),
     "data.train_size", "a multiple of 10"),
    ("balanced-test-not-divisible",
     doc(data="{dataset: mnist5k, test_size: 55, subset: balanced}"), "data.test_size",
     "a multiple of 10"),
    ("hvps-below-top-k", doc(curvature="{top_k: 20, max_hvps: 10}"),
     "curvature.max_hvps", "at least curvature.top_k"),
    ("float64-on-tpu", doc(strategy="tpu", curvature="{dtype: float64}"), "curvature.dtype",
     "float32 with strategy: tpu"),
    # output directory
    ("output-absolute", doc(output="{dir: /tmp/run}"), "output.dir", "a relative path"),
    ("output-dotdot", doc(output="{dir: runs/../../etc}"), "output.dir", "without '..'"),
    ("output-windows-drive", doc(output="{dir: 'C:\\runs'}"), "output.dir", "a relative path"),
    ("output-home", doc(output="{dir: ~/runs}"), "output.dir", "a relative path"),
    ("output-dot", doc(output="{dir: .}"), "output.dir", "below the working directory"),
    # files
    ("missing-file", None, FILE, "a readable recipe file"),
    ("directory", "<directory>", FILE, "a readable recipe file"),
    ("not-utf8", b"name: t\ndata: {dataset: \xff\xfe}\n", FILE, "UTF-8 YAML"),
    ("yaml-syntax-error", "name: t\ndata: {dataset: mnist5k\n", FILE, "valid YAML"),
    ("yaml-tab-indent", "name: t\ndata:\n\tdataset: mnist5k\n", FILE, "valid YAML"),
    ("two-documents", doc() + "---\nname: u\n", FILE, "valid YAML"),
    ("control-character", "name: t\x07\n", FILE, "valid YAML"),
    ("python-tag", "name: !!python/object/apply:os.system ['true']\n", FILE, "valid YAML"),
    ("empty-file", "", FILE, "a mapping with keys name"),
    ("comments-only", "# nothing here\n", FILE, "a mapping with keys name"),
    ("top-level-list", "- name: t\n- data: x\n", FILE, "a mapping with keys name"),
    ("top-level-scalar", "quickstart\n", FILE, "a mapping with keys name"),
    # overrides (applied to the valid BASE recipe)
    ("override-without-equals", ["optimizer.lr"], "override", "SECTION.KEY=VALUE"),
    ("override-empty-name", ["optimizer..lr=1"], "override", "SECTION.KEY=VALUE"),
    ("override-unknown-path", ["optimizer.learning_rate=0.1"], "optimizer.learning_rate",
     "one of the keys name, lr"),
    ("override-unknown-section", ["optimiser.lr=0.1"], "optimiser", "one of the keys"),
    ("override-names-a-section", ["optimizer=adam"], "optimizer", "a setting inside it"),
    ("override-below-a-setting", ["loss.kind=mse"], "loss.kind", "loss itself"),
    ("override-bad-yaml-value", ["optimizer.lr=[0.1"], "optimizer.lr", "a YAML value"),
    ("override-negative-lr", ["optimizer.lr=-1"], "optimizer.lr", "a number > 0"),
    ("override-huge-steps", ["training.max_steps=1e30"], "training.max_steps", "1,000,000,000"),
    ("override-unknown-option", ["model.options.widht=3"], "model.options.widht", "width"),
]


@pytest.mark.parametrize("source, path, allowed", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_malformed_recipe_is_rejected(tmp_path: Path, source: object, path: str,
                                      allowed: str) -> None:
    overrides: list[str] = []
    if isinstance(source, list):
        file, overrides = write(tmp_path, doc()), source
    elif source is None:
        file = tmp_path / "missing.yaml"
    elif source == "<directory>":
        file = tmp_path
    else:
        file = write(tmp_path, source)  # type: ignore[arg-type]
    with pytest.raises(RecipeError) as err:
        load_recipe(file, overrides)
    expected = str(file) if path == FILE else path
    matching = [error for error in err.value.errors if error.path == expected]
    assert matching, f"no error names {expected!r}: {err.value}"
    assert allowed in matching[0].allowed
    assert f"{expected}: " in str(err.value) and allowed in str(err.value)


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30 and len({case[0] for case in CASES}) == len(CASES)
