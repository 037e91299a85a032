"""The official client's kubeconfig loader and REST layer, imported without the packages' ``__init__`` modules.

``import kubernetes.client.rest`` runs ``kubernetes/__init__`` and ``kubernetes/client/__init__`` first, and
those import every API class and model (with pydantic): about 12 MB of RSS that the sidecar never uses, since
it sends its few GETs itself. The kubeconfig loader also imports ``requests_oauthlib`` (with ``requests``)
and ``oauthlib.oauth2`` for OIDC token refresh only: another 6 MB for a kubelet kubeconfig that holds client
certificates. So the packages are entered without their ``__init__``: the three modules used are loaded from
the installed files as usual, and the packages' own ``__init__`` still runs in full the first time anything
else is asked of them (a later ``kubernetes.client.CoreV1Api`` works as ever). The OIDC modules are imported
when the loader first uses them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# Loaded first so that their parents are entered without running __init__ (see _package).
_PACKAGES = ("kubernetes", "kubernetes.client", "kubernetes.utils")
# Imported by kube_config at module level, used only to refresh OIDC tokens.
_OIDC_MODULES = ("oauthlib", "oauthlib.oauth2", "requests_oauthlib")


def _package(name: str) -> types.ModuleType:
    """The package *name*, entered without running its ``__init__`` until an attribute it would define is read."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package (pip install kubernetes)")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(attribute: str) -> Any:
        # Someone wants more than the submodules loaded here: run the real __init__ into this module, once.
        del module.__dict__["__getattr__"]
        loader.exec_module(module)
        return getattr(module, attribute)

    module.__dict__["__getattr__"] = complete
    sys.modules[name] = module
    return module


class _OnFirstUse(types.ModuleType):
    """Stands in for a module during kube_config's import; any attribute read imports the real module."""

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)  # the import system probing for __path__ and the like
        return getattr(importlib.import_module(self.__name__), attribute)


def _on_call(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def _load() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    for name in _PACKAGES:
        _package(name)
    configuration = importlib.import_module("kubernetes.client.configuration")
    rest = importlib.import_module("kubernetes.client.rest")
    client = sys.modules["kubernetes.client"]
    # kube_config does `from kubernetes.client import ApiClient, Configuration`; ApiClient (with every model)
    # serves only new_client_from_config, which the sidecar never calls.
    placeholders = {
        "Configuration": configuration.Configuration,
        "ApiClient": _on_call("kubernetes.client.api_client", "ApiClient"),
    }
    added = [k for k in placeholders if k not in client.__dict__]
    for key in added:
        client.__dict__[key] = placeholders[key]
    stand_ins: dict[str, types.ModuleType] = {}
    if not any(name in sys.modules for name in _OIDC_MODULES):
        for name in _OIDC_MODULES:
            stand_ins[name] = _OnFirstUse(name)
        stand_ins["oauthlib"].oauth2 = stand_ins["oauthlib.oauth2"]  # type: ignore[attr-defined]
        stand_ins["requests_oauthlib"].OAuth2Session = _on_call("requests_oauthlib", "OAuth2Session")  # type: ignore[attr-defined]
        sys.modules.update(stand_ins)
    try:
        kube_config = importlib.import_module("kubernetes.config.kube_config")
    finally:
        # The stand-ins stay only where kube_config bound them; anyone else importing these gets the real ones.
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
        if client.__dict__.get("ApiClient") is placeholders["ApiClient"]:
            del client.__dict__["ApiClient"]  # a later import of kubernetes.client defines the real one
    return configuration, rest, kube_config


if TYPE_CHECKING:  # the same modules, as the type checker knows them
    from kubernetes.client import configuration as k8s_configuration
    from kubernetes.client import rest as k8s_rest
    from kubernetes.config import kube_config
else:
    k8s_configuration, k8s_rest, kube_config = _load()

__all__ = ["k8s_configuration", "k8s_rest", "kube_config"]
