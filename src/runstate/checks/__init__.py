"""Check kinds: see :mod:`runstate.checks.base` for the interface and the registry."""

from runstate.checks.base import CHECKS, Check, CheckResult, ErrorKind, Phases, check_class

__all__ = ["CHECKS", "Check", "CheckResult", "ErrorKind", "Phases", "check_class"]
