"""Few-shot heads. Importing this package registers the built-in methods."""
from methods.base import VIEWS, Head, class_means, feature_view
from methods.registry import SettingsError, UnknownMethodError, create, get, list_methods, register, resolve_settings

from methods import protonet  # noqa: F401  (registers)
from methods import staf  # noqa: F401  (registers)
from methods import trx  # noqa: F401  (registers)
from methods import otam  # noqa: F401  (registers)

__all__ = ["Head", "VIEWS", "class_means", "feature_view", "create", "get", "list_methods", "register", "resolve_settings", "SettingsError", "UnknownMethodError"]
