"""Keep a download inside its model root, whatever the node's disk holds.

The operator only renders paths strictly under an allowed model root (render/roots.py), but the
disk may disagree with the path: a directory on the way may be a symlink to `/etc`. Two callers:

- the download Job's init container (`python3 -m ome_operator.downloader.confine --root R --path P
  --owner UID:GID`, root with CAP_CHOWN only) creates the model's directory and hands it, and only
  it, to the download user;
- `ome-operator download --confine-root R` checks again before it writes a byte.

Both walk down from the root one directory at a time with O_NOFOLLOW, so a symlink anywhere below
the root is refused, not followed, and nothing is created or changed when it is. Missing
directories between the root and the model's are created root-owned (mode 0755) and never chowned.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ConfinementError(Exception):
    """The destination is outside its root or reached through a symlink; running again cannot help."""

    permanent = True


def split_below(root: str, path: str) -> list[str]:
    """The segments of `path` below `root`; refuses a path not strictly under it."""
    if not root.startswith("/") or not path.startswith("/"):
        raise ConfinementError(f"{path!r} and its root {root!r} must be absolute paths")
    base = root.rstrip("/")
    if not path.startswith(base + "/"):
        raise ConfinementError(f"{path!r} is not strictly under the model root {root!r}")
    parts = path[len(base) + 1 :].split("/")
    if any(part in ("", ".", "..") for part in parts) or "\x00" in path:
        raise ConfinementError(f"{path!r} is not a normalized path below {root!r} (no '', '.' or '..' segments)")
    return parts


@contextlib.contextmanager
def open_confined(root: str, path: str, *, create: bool) -> Iterator[int]:
    """A descriptor of `path`'s directory, reached from `root` without following any symlink."""
    parts = split_below(root, path)
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        reached = root.rstrip("/")
        for part in parts:
            reached = f"{reached}/{part}"
            try:
                fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                continue
            except FileNotFoundError:
                if not create:
                    raise ConfinementError(f"{reached} does not exist") from None
            except OSError as exc:  # ELOOP for a symlink, ENOTDIR for a file
                raise ConfinementError(
                    f"{reached} is a symlink or not a directory ({exc.strerror}); refusing to follow it "
                    f"out of the model root {root}"
                ) from None
            # Another Job on this node may make it first; it is opened below with the same checks.
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fds[-1])
            try:
                fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
            except OSError as exc:
                raise ConfinementError(f"{reached} changed while it was created ({exc.strerror})") from None
        yield fds[-1]
    finally:
        for fd in reversed(fds):
            os.close(fd)


def find_symlinks(directory: Path) -> list[str]:
    """Symlinks already inside a model's directory: writing through one would leave the root."""
    found = []
    for current, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            if os.path.islink(os.path.join(current, name)):
                found.append(os.path.join(current, name))
    return sorted(found)


def resolve_confined_dest(root: str, dest: Path) -> Path:
    """The download's destination, checked (and its directory created if missing) before any write.

    Refused (ConfinementError) when `dest` is not strictly under `root`, when a directory on the way
    is a symlink, when the resolved path leaves the root, or when `dest` already holds a symlink.
    """
    path = str(dest)
    with open_confined(root, path, create=True):
        pass
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if not real.startswith(real_root.rstrip("/") + "/"):
        raise ConfinementError(f"{path} resolves to {real}, outside the model root {real_root}")
    links = find_symlinks(dest)
    if links:
        shown = ", ".join(links[:5]) + (" ..." if len(links) > 5 else "")
        raise ConfinementError(f"{path} holds symlinks ({shown}); remove them, the downloader writes no links")
    return dest


def prepare_model_dir(root: str, path: str, uid: int, gid: int) -> None:
    """The init container's work: the model's directory exists and belongs to the download user."""
    with open_confined(root, path, create=True) as fd:
        # By descriptor: the directory checked is the directory chowned, never what a name points to now.
        os.fchown(fd, uid, gid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m ome_operator.downloader.confine",
        description="Create a model's directory below its root and chown only it, refusing symlinks.",
    )
    parser.add_argument("--root", required=True, help="the model root (the mounted hostPath volume)")
    parser.add_argument("--path", required=True, help="the model's directory, strictly under --root")
    parser.add_argument("--owner", required=True, help="UID:GID that the download runs as")
    args = parser.parse_args(argv)
    uid, _, gid = args.owner.partition(":")
    try:
        prepare_model_dir(args.root, args.path, int(uid), int(gid or uid))
    except (ConfinementError, OSError) as exc:
        message = f"refused: {exc}"
        print(message, file=sys.stderr)
        if os.path.exists("/dev/termination-log"):  # in a pod; never create it in a developer's /dev
            with contextlib.suppress(OSError):
                Path("/dev/termination-log").write_text(message)
        return 3
    print(f"{args.path} ready for {args.owner}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
