"""Guide import path for the model factories (re-exports `workshop.models.factories`)."""

from workshop.models import factories as _factories
from workshop.models.factories import *  # noqa: F401,F403  pylint: disable=wildcard-import

__all__ = list(_factories.__all__)
