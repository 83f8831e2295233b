"""Writing output: through symlinks, into pipes, with the modes plain open()/mkdir give, one-line
errors for paths that cannot be written, report folders that never swallow a user's files, and
strict JSON."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from pathlib import Path

import pytest

from crossnn.errors import OutputError
from crossnn.files import (
    check_output_path,
    json_text,
    replace_directory,
    revive_floats,
    safe_name,
    write_bytes_atomic,
    write_text_atomic,
    write_text_output,
)
from crossnn.report import MANIFEST, MANIFEST_HEADING, check_replaceable, check_report_folder, with_manifest

ROOT = Path(__file__).parents[1]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_and_folders_get_the_umask_modes_and_a_replaced_file_keeps_its_own(tmp_path, umask_027):
    new = tmp_path / "deeper" / "new.json"
    write_text_atomic(new, "{}")
    assert _mode(new) == 0o640 and _mode(tmp_path / "deeper") == 0o750
    existing = tmp_path / "kept.json"
    existing.write_text("old")
    os.chmod(existing, 0o604)
    write_text_atomic(existing, "new")
    assert existing.read_text() == "new" and _mode(existing) == 0o604
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deeper", "kept.json"]  # no temp files left


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real.name)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to("made.json")
    write_text_atomic(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "made.json").read_text() == "made"


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_text_atomic(fifo, "through the fifo")
    reader.join(10)
    assert got == ["through the fifo"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["fifo"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_pipe_named_by_its_proc_fd_link_is_written_into():
    read_end, write_end = os.pipe()
    try:
        write_bytes_atomic(Path(f"/proc/self/fd/{write_end}"), b"into the pipe")
        assert os.read(read_end, 100) == b"into the pipe"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_dash_writes_to_standard_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_text_output("-", json_text({"a": 1}))
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    assert list(tmp_path.iterdir()) == []
    write_text_output(tmp_path / "a.json", "x")
    assert (tmp_path / "a.json").read_text() == "x"


def test_a_failed_write_is_one_line_naming_the_path(tmp_path):
    (tmp_path / "good.toml").write_text("x")
    cases = [(tmp_path / "good.toml" / "x.json", "Not a directory"), (tmp_path, "Is a directory")]
    if Path("/proc/self").is_dir():
        cases.append((Path("/proc/x.json"), "/proc/x.json: cannot write there ("))
    for path, fragment in cases:
        with pytest.raises(OutputError) as caught:
            write_text_atomic(path, "x")
        message = str(caught.value)
        assert message.startswith(f"{path}: cannot write there (") and fragment in message and "\n" not in message
    assert (tmp_path / "good.toml").read_text() == "x"


def test_check_output_path_names_the_option_and_creates_nothing(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("x")
    bad = [(good / "x.json", {}, f"--json {good}/x.json: {good} is not a folder"),
           (tmp_path, {}, f"--json {tmp_path}: is a folder; give a file name"),
           (good, {"directory": True}, f"--json {good}: is not a folder"),
           ("", {}, "--json: the path is empty")]
    for path, options, message in bad:
        with pytest.raises(OutputError) as caught:
            check_output_path(path, "--json", **options)
        assert str(caught.value) == message
    check_output_path(tmp_path / "a" / "b" / "c.json", "--json")
    check_output_path(good, "--json", force=True)  # a file of the user's: replaced only when forced
    check_output_path(tmp_path / "reports", "--out", directory=True)
    check_output_path("-", "--json", stdout=True)
    assert [p.name for p in tmp_path.iterdir()] == ["good.toml"]


def test_check_output_path_refuses_a_folder_where_no_file_can_be_made(tmp_path):
    """Root passes every os.access check, so the check makes (and removes) a file to find out."""
    if Path("/proc/self").is_dir():  # the kernel refuses new files in /proc, root or not
        with pytest.raises(OutputError, match=r"^--json /proc/x\.json: cannot write there \(.+\)$"):
            check_output_path("/proc/x.json", "--json")
    check_output_path(tmp_path / "fine.json", "--json")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def _report(folder: Path, heading: str = "# crossnn report: r") -> None:
    """A report folder as crossnn writes it: README.md, a run's JSON, and the manifest listing them."""
    folder.mkdir()
    (folder / "README.md").write_text(heading + "\n")
    (folder / "run_circle.json").write_text("{}")
    (folder / MANIFEST).write_text(f"{MANIFEST_HEADING}\nREADME.md\nrun_circle.json\n")


def test_replace_directory_swaps_a_report_in_with_the_umask_mode(tmp_path, umask_027):
    target = tmp_path / "r"
    _report(target)
    replace_directory(target, lambda folder: (folder / "README.md").write_text("# crossnn report: r\nnew\n"),
                      check_replaceable)
    assert [p.name for p in target.iterdir()] == ["README.md"] and "new" in (target / "README.md").read_text()
    assert _mode(target) == 0o750 and [p.name for p in tmp_path.iterdir()] == ["r"]


def test_replace_directory_keeps_a_folder_the_guard_refuses_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "mydata"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not a crossnn report"):
        replace_directory(target, lambda folder: (folder / "README.md").write_text("x"), check_replaceable)
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and [p.name for p in tmp_path.iterdir()] == ["mydata"]


def test_replace_directory_through_a_symlink_replaces_the_folder_it_names(tmp_path):
    _report(tmp_path / "real")
    (tmp_path / "link").symlink_to("real")
    replace_directory(tmp_path / "link", lambda folder: (folder / "README.md").write_text("# crossnn report: new\n"),
                      check_replaceable)
    assert ((tmp_path / "link").is_symlink()
            and (tmp_path / "real" / "README.md").read_text() == "# crossnn report: new\n")
    assert not (tmp_path / "real" / "run_circle.json").exists()


def test_only_folders_crossnn_wrote_may_be_replaced_and_the_users_files_in_them_are_kept(tmp_path):
    """A report folder may be replaced; check_replaceable names the entries that are not the report's
    (by its manifest, or for a report from before manifests by its README's links) so they are kept.
    A folder that is not a report at all stays."""
    for name in ("cpu-2core", "gpu-h100", "differences"):  # the committed reports can be regenerated
        assert check_replaceable(ROOT / "reports" / name) == []
    assert check_replaceable(tmp_path / "missing") == []
    (tmp_path / "empty").mkdir()
    assert check_replaceable(tmp_path / "empty") == []
    _report(tmp_path / "report")
    assert check_replaceable(tmp_path / "report") == []
    (tmp_path / "report" / "notes.md").write_text("mine")
    (tmp_path / "report" / "run_my_analysis.json").write_text("{}")
    assert check_replaceable(tmp_path / "report") == ["notes.md", "run_my_analysis.json"]
    legacy = tmp_path / "legacy"  # no manifest: the README's links say which run_*.json are the report's
    legacy.mkdir()
    (legacy / "README.md").write_text("# crossnn report: old\n![loss](loss_circle.png)\n")
    for name in ("loss_circle.png", "run_circle.json", "run_my_analysis.json", "overhead.png"):
        (legacy / name).write_text("x")
    assert check_replaceable(legacy) == ["run_my_analysis.json"]
    _report(tmp_path / "no-readme")
    (tmp_path / "no-readme" / MANIFEST).unlink()
    (tmp_path / "no-readme" / "README.md").write_text("# My data\n")
    _report(tmp_path / "differences", "# What differs between the frameworks, measured")
    (tmp_path / "differences" / MANIFEST).unlink()
    (tmp_path / "differences" / "sub").mkdir()
    assert check_replaceable(tmp_path / "differences") == ["run_circle.json", "sub"]
    (tmp_path / "file").write_text("x")
    for name, why in (("no-readme", "no crossnn-manifest.txt and no README.md of a crossnn report"),
                      ("file", "is not a folder")):
        with pytest.raises(OutputError) as caught:
            check_replaceable(tmp_path / name)
        assert why in str(caught.value)


def test_replacing_a_report_keeps_the_users_files_and_refuses_to_overwrite_one(tmp_path):
    """Only the files the old report's manifest lists go; the user's file and folder come along into
    the new report (same inode: linked, not copied); a user's file with a name the new report uses
    stops the swap and everything stays as it was."""
    target = tmp_path / "r"
    _report(target)
    (target / "run_my_analysis.json").write_text("mine")
    (target / "sub").mkdir()
    (target / "sub" / "a.txt").write_text("a")
    inode = (target / "run_my_analysis.json").stat().st_ino
    new_readme = with_manifest(lambda folder: (folder / "README.md").write_text("# crossnn report: r\nnew\n"))
    replace_directory(target, new_readme, check_replaceable)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", MANIFEST, "run_my_analysis.json", "sub"]
    assert (target / "run_my_analysis.json").stat().st_ino == inode and (target / "sub" / "a.txt").read_text() == "a"
    assert (target / MANIFEST).read_text() == f"{MANIFEST_HEADING}\nREADME.md\n"

    def clash(folder):
        (folder / "run_my_analysis.json").write_text("the report's")
        new_readme(folder)

    with pytest.raises(OutputError, match="holds run_my_analysis.json, which crossnn did not write there"):
        replace_directory(target, clash, check_replaceable)
    assert (target / "run_my_analysis.json").read_text() == "mine" and "new" in (target / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.mark.parametrize("name", ["", ".", "..", "../escape", "a/b"])
def test_report_names_must_be_plain_folder_names(tmp_path, name):
    with pytest.raises(OutputError, match=r"^--name: must be a plain folder name"):
        check_report_folder(tmp_path, name)


def test_safe_name_keeps_a_spec_name_inside_its_folder():
    assert safe_name("circle") == "circle" and safe_name("two-tower_2.1") == "two-tower_2.1"
    assert safe_name("../../evil") == ".._.._evil" and safe_name("a b\\c") == "a_b_c"


def test_json_text_is_strict_and_revive_floats_reads_it_back():
    document = {"losses": [1.0, math.inf, -math.inf, math.nan], "max_rel": math.inf, "note": "ok", "n": None}

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    text = json_text(document)
    parsed = json.loads(text, parse_constant=refuse)
    assert parsed["losses"] == [1.0, "Infinity", "-Infinity", "NaN"] and text.endswith("}\n")
    back = revive_floats(parsed)
    assert back["losses"][:3] == [1.0, math.inf, -math.inf] and math.isnan(back["losses"][3])
    assert back["max_rel"] == math.inf and back["note"] == "ok" and back["n"] is None
    assert json_text(back) == text


def test_a_page_of_the_users_in_the_differences_report_is_kept(tmp_path):
    """Only README.md and the catalog entries' pages and figures belong to a differences report
    written before manifests; a page of the user's is kept."""
    folder = tmp_path / "differences"
    folder.mkdir()
    (folder / "README.md").write_text("# What differs between the frameworks, measured\n")
    (folder / "adam-epsilon.md").write_text("page")
    (folder / "adam-epsilon.png").write_bytes(b"png")
    assert check_replaceable(folder) == []
    (folder / "my-notes.md").write_text("mine")
    assert check_replaceable(folder) == ["my-notes.md"]


def test_a_long_file_name_that_passes_the_check_is_written(tmp_path):
    """The temporary name beside the target is short, so any name the folder takes can be written."""
    path = tmp_path / ("a" * 245 + ".json")
    check_output_path(path, "--json")
    write_text_atomic(path, "{}")
    assert path.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [path.name]
