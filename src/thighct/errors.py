"""Errors that reach the user: each names the subject, the file and the fix."""

from __future__ import annotations


class ThighctError(Exception):
    """A problem with the user's input that the user can fix.

    Parameters
    ----------
    message: what is wrong.
    subject: the subject id it concerns, if any.
    path: the file it concerns, if any.
    fix: what the user should do.
    """

    def __init__(
        self, message: str, *, subject: str | None = None, path=None, fix: str | None = None
    ):
        self.message = message
        self.subject = subject
        self.path = None if path is None else str(path)
        self.fix = fix
        parts = []
        if subject is not None:
            parts.append(f"subject {subject}")
        if self.path is not None:
            parts.append(f"file {self.path}")
        head = f"[{', '.join(parts)}] " if parts else ""
        text = head + message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class CohortError(ThighctError):
    """One or more problems in a cohort table; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str], path=None):
        self.problems = list(problems)
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the cohort table:\n{body}",
            path=path,
            fix="correct these rows/columns of the cohort table (see workflow/schemas/cohort.schema.yaml)",
        )


class ScanErrors(ThighctError):
    """Several scans that cannot be used, reported together; ``problems`` holds one error each.

    Each entry keeps its own subject, file and fix; ``fix`` is what applies to all of them
    (e.g. how to leave a subject out instead).
    """

    def __init__(
        self, problems: list[ThighctError], *, what: str, fix: str | None = None, path=None
    ):
        self.problems = list(problems)
        body = "\n".join("  - " + str(p).replace("\n", "\n    ") for p in self.problems)
        super().__init__(f"{len(self.problems)} {what}:\n{body}", path=path, fix=fix)
