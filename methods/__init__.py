"""Few-shot heads. Importing this package registers the built-in methods; methods from elsewhere (installed
plug-ins, `package.module:Class`, a protocol's `imports:`) come in through methods/external.py."""
from methods.base import VIEWS, Head, class_means, feature_view
from methods.registry import SettingsError, UnknownMethodError, create, get, list_methods, register, registered, resolve_settings

from methods import protonet  # noqa: F401  (registers)
from methods import staf  # noqa: F401  (registers)
from methods import trx  # noqa: F401  (registers)
from methods import otam  # noqa: F401  (registers)

__all__ = ["Head", "VIEWS", "class_means", "feature_view", "create", "get", "list_methods", "register", "registered", "resolve_settings", "SettingsError", "UnknownMethodError"]
