"""Envoy edge configuration for Storefront: see :mod:`envoy_config.config`."""

from envoy_config.config import (
    DEFAULT_UPSTREAMS,
    SERVICES,
    ConfigError,
    EdgeAuth,
    envoy_argv,
    envoy_binary,
    render,
    validate,
    write_config,
)

__all__ = [
    "DEFAULT_UPSTREAMS",
    "SERVICES",
    "ConfigError",
    "EdgeAuth",
    "envoy_argv",
    "envoy_binary",
    "render",
    "validate",
    "write_config",
]
