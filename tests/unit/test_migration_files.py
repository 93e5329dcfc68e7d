"""Applied migrations may not change what they do; their comments may be corrected."""

from __future__ import annotations

from pathlib import Path

from app.stores.migrations import _COMMENTS_EDITED, Migration, discover  # noqa: PLC2701


def test_every_migration_accepts_its_own_records() -> None:
    for m in discover():
        assert m.unchanged_since(m.checksum) and m.unchanged_since(m.text_checksum)


def test_corrected_comments_keep_the_recorded_checksums_valid() -> None:
    by_version = {m.version: m for m in discover()}
    for version, (recorded, statements) in _COMMENTS_EDITED.items():
        assert by_version[version].checksum == statements
        assert by_version[version].unchanged_since(recorded)


def test_a_changed_statement_is_refused_a_changed_comment_is_not(tmp_path: Path) -> None:
    path = tmp_path / "0001_x.sql"
    path.write_text("-- a table\nCREATE TABLE t (x UInt8) ENGINE = Memory;\n")
    before = Migration(1, "x", path)
    recorded_text, recorded = before.text_checksum, before.checksum
    path.write_text("-- the table, better described\nCREATE TABLE t (x UInt8) ENGINE = Memory;\n")
    assert Migration(1, "x", path).unchanged_since(recorded)
    path.write_text("CREATE TABLE t (x UInt16) ENGINE = Memory;\n")
    changed = Migration(1, "x", path)
    assert not changed.unchanged_since(recorded) and not changed.unchanged_since(recorded_text)
