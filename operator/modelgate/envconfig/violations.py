"""A broken config rule or a leak, with everything needed to find and fix it."""

from __future__ import annotations

from dataclasses import dataclass

# Shown instead of the value of a key marked secret.
MASK = "****"


@dataclass(frozen=True)
class Violation:
    """One broken rule, with everything needed to find and fix it."""

    environment: str
    key: str
    rule: str
    value: str | None
    message: str
    fix: str

    def describe(self) -> str:
        shown = "(missing)" if self.value is None else repr(self.value)
        return (
            f"environment {self.environment}: {self.key}={shown} violates rule "
            f"{self.rule}: {self.message}; fix: {self.fix}"
        )
