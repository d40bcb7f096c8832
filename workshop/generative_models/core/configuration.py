"""Guide import path for the configurations (re-exports `workshop.core.configuration`).

Importing it registers the built-in model families, so `parameters` of a
built-in `model_type` are checked as soon as a configuration is made.
"""

import workshop.models.factories  # noqa: F401  registers the built-in families
from workshop.core.configuration import (  # noqa: F401
    DataConfiguration as DataConfiguration,
    ModelConfiguration as ModelConfiguration,
    OptimizerConfiguration as OptimizerConfiguration,
    TrainingConfiguration as TrainingConfiguration,
)

__all__ = ["DataConfiguration", "ModelConfiguration", "OptimizerConfiguration", "TrainingConfiguration"]
