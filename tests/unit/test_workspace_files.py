"""The workspace walk (completion/workspace_files.py): ignores, bounds, faults, changes."""

from __future__ import annotations

import os
from pathlib import Path

from completion.workspace_files import WorkspaceFiles, _listing


def tree(root: Path) -> None:
    files = {
        "src/a.py": "def a(): ...\n",
        "src/pkg/b.py": "def b(): ...\n",
        "src/pkg/notes.txt": "not source\n",
        "src/gen/c.gen.py": "generated\n",
        "kept/d.pyi": "def d() -> int: ...\n",
        ".git/hooks/x.py": "",
        ".venv/lib/site.py": "",
        "myenv/pyvenv.cfg": "home = /usr\n",
        "myenv/lib/e.py": "",
        "node_modules/pkg/f.py": "",
        "build/lib/g.py": "",
        "ignored_dir/h.py": "",
        ".gitignore": "ignored_dir/\n*.gen.py\n",
        "src/.gitignore": "secret.py\n",
        "src/secret.py": "",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    with (root / "src" / "big.py").open("wb") as big:  # 50 MB, sparse: cheap to make
        big.truncate(50 << 20)
    os.symlink(root, root / "src" / "loop")  # a link back up: a loop if followed
    os.symlink(root / "nowhere.py", root / "src" / "dangling.py")


def walk(files: WorkspaceFiles, slice_: int = 3) -> int:
    slices = 0
    while not files.walked:
        files.walk_some(slice_)
        slices += 1
        assert slices < 1000
    return slices


def test_the_walk_finds_source_files_and_nothing_ignored(tmp_path: Path) -> None:
    tree(tmp_path)
    files = WorkspaceFiles([tmp_path])
    slices = walk(files, slice_=1)
    assert slices >= 5  # a directory per slice, not the tree at once
    names = {p.relative_to(tmp_path).as_posix() for p in files.files}
    assert names == {"src/a.py", "src/pkg/b.py", "kept/d.pyi"}
    assert files.counts.workspaceFiles == 3
    assert files.counts.workspaceSkipped == 1  # big.py (50 MB): never read


def test_the_walk_stops_at_max_files(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"m{i:02}.py").write_text("")
    files = WorkspaceFiles([tmp_path], max_files=10)
    walk(files, slice_=100)
    assert len(files.files) == 10 and files.walked
    assert not files.changed(tmp_path / "new.py")  # full: a new file is not added


def test_a_file_gone_between_listing_and_reading_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "gone.py").write_text("")
    files = WorkspaceFiles([tmp_path])
    (entry,) = _listing(tmp_path)
    (tmp_path / "gone.py").unlink()
    assert files._visit(entry, []) == 0 and files.counts.workspaceSkipped == 1
    assert files.read(tmp_path / "gone.py") is None


def test_changes_mark_known_files_and_ignored_paths_are_not_read(tmp_path: Path) -> None:
    tree(tmp_path)
    files = WorkspaceFiles([tmp_path])
    walk(files)
    a = tmp_path / "src" / "a.py"
    assert files.changed(a) and files.files[a].changed
    assert files.changed(tmp_path / "src" / "new.py")  # created
    for ignored in (
        ".venv/lib/site.py",
        "node_modules/pkg/f.py",
        "ignored_dir/h.py",
        "src/gen/c.gen.py",
        "src/secret.py",
        "src/pkg/notes.txt",
    ):
        assert not files.changed(tmp_path / ignored), ignored
    assert files.counts.workspaceChanged == 2 and files.counts.workspaceIgnored == 6
    assert files.deleted(a) and a not in files.files
    assert not files.deleted(a)
    assert files.counts.workspaceDeleted == 1
    outside = tmp_path.parent / "elsewhere.py"
    assert not files.watched(outside)


def test_watch_points_leave_out_the_bulk_at_the_top(tmp_path: Path) -> None:
    tree(tmp_path)
    points = WorkspaceFiles([tmp_path]).watch_points()
    assert (tmp_path, False) in points
    watched = {p.name for p, recursive in points if recursive}
    assert watched == {"src", "kept"}
