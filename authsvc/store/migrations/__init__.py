"""Versioned schema migrations, one numbered SQL file per step and backend.

`NNNN_name.sql` under `sqlite/` and `postgresql/`: the same steps with the
same numbers on both, so a schema version means the same tables everywhere.
Each step runs in its own transaction together with the row that records it
in `schema_migrations`; a database newer than this build is refused rather
than written to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from authsvc.errors import ConfigError

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements (our files keep `;` only at statement ends)."""
        body = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in body.split(";") if s.strip()]


def load(dialect: str) -> list[Migration]:
    folder = resources.files(__package__) / dialect
    out = []
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    out.sort(key=lambda m: m.version)
    if [m.version for m in out] != list(range(1, len(out) + 1)):
        raise ConfigError(f"{dialect} migrations are not numbered 1..{len(out)}")
    return out


def pending(dialect: str, current: int, where: str) -> list[Migration]:
    """The steps after `current`; refuses a database whose schema is newer than this build."""
    steps = load(dialect)
    if current > len(steps):
        raise ConfigError(
            f"{where}: schema version {current} is newer than this build supports ({len(steps)}); "
            "run a newer authsvc"
        )
    return steps[current:]


def latest(dialect: str) -> int:
    return len(load(dialect))
