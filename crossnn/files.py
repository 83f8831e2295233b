"""Writing output: files completely or not at all (written beside the target, then renamed over it),
folders swapped in whole, checks of an output path before any work (it destroys no input, and
replaces only what crossnn wrote unless forced), and strict JSON; and reading NumPy archives,
refusing a file that is not one.

A symlink is followed (the file it names is replaced, the link stays); a device or pipe is written
straight into. New files and folders get the modes a plain open() and mkdir would give (umask
applied); a replaced file keeps its mode. A failure to write is an OutputError naming the path.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossnn.errors import OutputError

#: the output path that means standard output
STDOUT = "-"

#: how strict JSON spells the floats it has no numbers for (the tokens Python's json module reads)
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _cannot_write(path, err: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write there ({err.strerror or err})")


#: the first bytes of a zip file (a NumPy .npz archive is one): a local file header, or an empty archive
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def open_npz(path: str | Path):
    """np.load of a .npz archive, for use in a `with` block; a file that is not a zip archive raises
    ValueError("not a NumPy archive (.npz)") instead of np.load's guess that it holds pickled data."""
    import numpy as np

    with open(path, "rb") as handle:
        if handle.read(4) not in ZIP_MAGIC:
            raise ValueError("not a NumPy archive (.npz)")
    return np.load(path, allow_pickle=False)


def check_output_path(path: str | Path, option: str, *, directory: bool = False, stdout: bool = False,
                      inputs: dict[str, str] | None = None, force: bool = False) -> None:
    """Check, leaving nothing behind, that `option` can write its file at `path` (with directory=True:
    its folder, or into the folder there): `path` is not a folder (with directory=True: not a file),
    and the folder it goes into, or the nearest existing one above it (the missing ones are made when
    writing), takes a new file (one is made there and removed). An existing file there must be none
    of `inputs` (path -> what it is, e.g. "this command's spec file"; compared after following links, so a link
    or a second name of an input is one too) and, unless `force`, a file crossnn wrote
    (written_by_crossnn). With stdout=True, "-" (standard output) passes. Raises a one-line
    OutputError naming the option and the path."""
    text = str(path)
    if stdout and text == STDOUT:
        return
    if not text:
        raise OutputError(f"{option}: the path is empty")
    if not directory and text.endswith(("/", os.sep)):
        raise OutputError(f"{option} {text}: names a folder; give a file name")

    def fail(reason: str) -> OutputError:
        return OutputError(f"{option} {text}: {reason}")

    try:
        info = os.stat(text)  # through symlinks
    except (FileNotFoundError, NotADirectoryError):  # the folder above says why
        info = None
    except OSError as err:
        raise fail(f"cannot write there ({err.strerror})") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode) != directory:
            raise fail("is not a folder" if directory else "is a folder; give a file name")
        if stat.S_ISREG(info.st_mode):  # replaced by a rename in its folder
            for source, what in (inputs or {}).items():
                if _same_file(info, source):
                    raise fail(f"is {what}; writing there would destroy it: choose another path")
            if not force and not written_by_crossnn(text):
                raise fail("exists and is not a file crossnn wrote; not replacing it (--force replaces it)")
            reason = _cannot_create_in(Path(os.path.realpath(text)).parent)
            if reason:
                raise fail(f"cannot write there ({reason})")
        elif not os.access(text, os.W_OK | (os.X_OK if directory else 0)):  # a folder, device or pipe
            raise fail(f"cannot write there ({_denied(text)})")
        return
    folder = next(p for p in Path(os.path.realpath(text)).parents if os.path.exists(p))
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder")
    reason = _cannot_create_in(folder)
    if reason:
        raise fail(f"cannot write there ({reason})")


def _same_file(info: os.stat_result, other: str | Path) -> bool:
    """Whether the file `info` describes is the file at `other` (through links; a missing one is not)."""
    try:
        theirs = os.stat(other)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (theirs.st_dev, theirs.st_ino)


#: what a script or page `crossnn code` writes says in its first lines
GENERATED = ("Generated by `crossnn code", "Generated by <code>crossnn code")


def written_by_crossnn(path: str | Path) -> bool:
    """Whether the regular file at `path` holds nothing of the user's that crossnn did not write, so
    an output may replace it: it is empty; or an .npz crossnn wrote (its `format` is crossnn-*: a
    checkpoint, or the data beside a script of `crossnn code`); or a JSON document crossnn wrote
    (its top level carries "crossnn_version", as `run --json` writes, or a "kind" of "crossnn-*", as
    `bench --json` does); or a script or page of `crossnn code` (its first lines say "Generated by
    `crossnn code ...`")."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
        if not head:
            return True
        if head[:4] in ZIP_MAGIC:
            with open_npz(path) as archive:
                return "format" in archive.files and str(archive["format"]).startswith("crossnn-")
        if head.lstrip()[:1] == b"{":
            document = json.loads(Path(path).read_bytes())
            return isinstance(document, dict) and (
                "crossnn_version" in document or str(document.get("kind", "")).startswith("crossnn-")
                or (list(document) == ["experiments"] and isinstance(document["experiments"], list)
                    and all(isinstance(d, dict) and "crossnn_version" in d for d in document["experiments"])))
        text = head.decode("utf-8", errors="replace")
        return any(marker in text for marker in GENERATED)
    except (OSError, ValueError, RecursionError, zipfile.BadZipFile, EOFError):
        return False


def _cannot_create_in(folder: Path) -> str | None:
    """Why no file can be made in `folder`, found by making one and removing it at once (os.access
    would let root through where the file system refuses), or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".crossnn-probe.", dir=folder)
    except OSError as err:
        return (err.strerror or str(err)).lower()
    os.close(fd)
    os.unlink(probe)
    return None


def _denied(path) -> str:
    """Why os.access refused to write at `path`."""
    return "read-only file system" if os.statvfs(path).f_flag & os.ST_RDONLY else "permission denied"


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` as UTF-8 to the file `path`, completely or not at all."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_text_output(path: str | Path, text: str) -> None:
    """Write `text` to standard output when `path` is "-", else to the file `path` completely or not at all."""
    if str(path) == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(Path(path), text)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to the file `path` names, completely or not at all; a device or pipe (which
    cannot be replaced) is written straight into. An OSError becomes an OutputError naming `path`."""
    try:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            with open(path, "wb") as handle:  # a folder raises IsADirectoryError here
                handle.write(data)
            return
        target = Path(os.path.realpath(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _beside(target, lambda name: os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            with os.fdopen(fd, "wb") as handle:
                if info is not None:
                    os.fchmod(handle.fileno(), stat.S_IMODE(info.st_mode))
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise _cannot_write(path, err) from err


def write_npz_atomic(path: Path, arrays: dict) -> None:
    """A NumPy .npz archive of `arrays`, written completely or not at all."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def _beside(target: Path, create: Callable[[Path], Any]) -> tuple[Path, Any]:
    """A new hidden name beside `target` and what `create(name)` returned (it must fail on a name
    that exists: os.open with O_EXCL, os.mkdir)."""
    while True:
        name = target.with_name(f".crossnn.{secrets.token_hex(4)}.tmp")  # short: any target name fits
        try:
            return name, create(name)
        except FileExistsError:
            continue


def replace_directory(target: Path, build: Callable[[Path], None],
                      keep: Callable[[Path], list[str]]) -> None:
    """Fill a new folder beside `target` with `build(folder)`, then swap it in for `target` (through a
    symlink: the folder it names). On an existing target, `keep(target)` is called just before the
    swap: it raises when the target must stay, else names its entries that are not the old output's
    (the user's files), which are carried into the new folder (hard-linked, or copied) before the
    swap; one whose name the new folder uses stops the swap. An OSError becomes an OutputError
    naming `target`."""
    try:
        target = Path(os.path.realpath(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        new, _ = _beside(target, lambda name: os.mkdir(name, 0o777))
        try:
            build(new)
            if not target.exists():
                os.replace(new, target)
                return
            for name in keep(target):
                if os.path.lexists(new / name):
                    raise OutputError(f"{target}: holds {name}, which crossnn did not write there and the new output "
                                      "would replace; move it away first")
                _carry(target / name, new / name)
            old, _ = _beside(target, lambda name: os.mkdir(name, 0o777))
            os.replace(target, old)  # over the empty folder just made
            try:
                os.replace(new, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
    except OSError as err:
        raise _cannot_write(target, err) from err


def _carry(source: Path, destination: Path) -> None:
    """Put `source` at `destination` too, leaving `source` as it is: a symlink as a symlink, a folder
    as a copy, a file as a hard link (a copy where the file system has none)."""
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        shutil.copytree(source, destination, symlinks=True)
    else:
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)


def safe_name(text: str) -> str:
    """`text` fit to be part of a file name: every character but letters, digits, '.', '-' and '_'
    (a path separator among them) becomes '_'."""
    return re.sub(r"[^\w.-]", "_", text)


def safe_names(texts: list[str]) -> list[str]:
    """safe_name of each text, a repeat made distinct by a suffix (-2, -3, ...), so no two clash."""
    out: list[str] = []
    for text in texts:
        base = name = safe_name(text)
        k = 1
        while name in out:
            k += 1
            name = f"{base}-{k}"
        out.append(name)
    return out


def json_text(document: Any) -> str:
    """`document` as strict JSON (indent 1, ending in a newline): NaN and infinities, which JSON has
    no numbers for, are written as the strings "NaN", "Infinity" and "-Infinity" (see revive_floats)."""
    return json.dumps(_spelt(document), indent=1, allow_nan=False) + "\n"


def _spelt(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _spelt(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_spelt(v) for v in value]
    return value


#: keys whose values are text a user chose (the spec, names), never a spelt-out float
TEXT_KEYS = frozenset({"experiment", "name", "case", "suite", "label", "message", "note", "description"})


def revive_floats(document: Any) -> Any:
    """A document read from JSON with the strings "NaN", "Infinity" and "-Infinity" (json_text's
    spelling) turned back into floats, except under TEXT_KEYS (a spec may be named "NaN")."""
    if isinstance(document, str):
        return NON_FINITE.get(document, document)
    if isinstance(document, dict):
        return {k: v if k in TEXT_KEYS else revive_floats(v) for k, v in document.items()}
    if isinstance(document, list):
        return [revive_floats(v) for v in document]
    return document
