"""Editor plugins: where they install, and the helpers hosts call. The plugins themselves (Lua,
Python for GIMP, shell glue) live in the top-level plugins/ folder; each one only calls the CLI."""
from __future__ import annotations

from .hosts import (
    HOSTS,
    InstallError,
    Placement,
    Plan,
    install,
    plan_install,
    plugins_root,
)

__all__ = ["HOSTS", "InstallError", "Placement", "Plan", "install", "plan_install", "plugins_root"]
