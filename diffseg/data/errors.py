"""Dataset problems are collected (every one found, each naming its file) and raised together before any work."""

from __future__ import annotations


class DatasetError(ValueError):
    """One or more problems with a dataset; ``problems`` lists each as 'path: what is wrong'."""

    def __init__(self, problems: list[str], dataset: str = ""):
        self.problems = list(problems)
        self.dataset = dataset
        head = f"dataset {dataset!r}: " if dataset else ""
        super().__init__(head + f"{len(self.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in self.problems))
