"""Recipes: YAML experiment descriptions validated against one typed schema.

Nothing here imports TensorFlow or Keras, so a command line can reject a bad
recipe in milliseconds before paying for the heavy imports.

Example:

```python
from eoskeras.recipes import RecipeError, bundled_recipes, load_recipe

recipe = load_recipe(bundled_recipes()["quickstart"], ["optimizer.lr_relative=2"])
print(recipe.model.name, recipe.optimizer.lr, recipe.output.dir)
```
"""
from eoskeras.recipes.bundled import RECIPES_DIR, bundled_recipes
from eoskeras.recipes.errors import MISSING, RecipeError
from eoskeras.recipes.options import FrozenOptions
from eoskeras.recipes.loader import dump_recipe, load_recipe, read_recipe_file
from eoskeras.recipes.overrides import apply_overrides
from eoskeras.recipes.parse import parse_recipe
from eoskeras.recipes.reference import schema_reference
from eoskeras.recipes.schema import (
    CurvatureSpec, DataSection, FlatnessSpec, ModelSpec, OptimizerSpec, OutputSpec, Recipe,
    StopSpec, TrainingSpec,
)

__all__ = [
    "MISSING", "RECIPES_DIR", "CurvatureSpec", "DataSection", "FlatnessSpec", "FrozenOptions",
    "ModelSpec", "OptimizerSpec", "OutputSpec", "Recipe", "RecipeError", "StopSpec",
    "TrainingSpec", "apply_overrides", "bundled_recipes", "dump_recipe", "load_recipe",
    "parse_recipe", "read_recipe_file", "schema_reference",
]
