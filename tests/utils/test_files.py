import json
import os
import tempfile

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tfvitmae.utils.files import (
    COMMIT_PLAN,
    PLAN_FORMAT,
    PLAN_VERSION,
    STAGING_MARKER,
    CommitPlanError,
    atomic_write,
    atomic_write_text,
    check_folder_path,
    commit_files,
    finish_commits,
    publish_dir,
    remove_staging_leftovers,
    staging_dir,
)


class Killed(BaseException):
    """Stands for a kill: nothing after it runs, as after SIGKILL (but `finally` does)."""


def stage(folder, files):
    staged = folder / ".tmp-save-1"
    staged.mkdir()
    for name, text in files.items():
        (staged / name).write_text(text)
    return staged


def contents(folder):
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    assert atomic_write_text(path, "first") == str(path)
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["out.txt"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("good")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, write)
    assert path.read_text() == "good" and os.listdir(tmp_path) == ["out.txt"]


def test_staging_dir_is_removed_whatever_happens(tmp_path):
    with pytest.raises(RuntimeError):
        with staging_dir(tmp_path / "parent") as folder:
            open(os.path.join(folder, "file"), "w").close()
            assert os.path.dirname(folder) == str(tmp_path / "parent")
            raise RuntimeError
    assert os.listdir(tmp_path / "parent") == []


def test_publish_dir_never_overwrites(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "saved_model.pb").write_text("x")
    (tmp_path / "empty").mkdir()
    publish_dir(str(staged), str(tmp_path / "empty"))  # an empty target is replaced
    assert os.listdir(tmp_path / "empty") == ["saved_model.pb"] and not staged.exists()
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(OSError):
        publish_dir(str(other), str(tmp_path / "empty"))
    assert os.listdir(tmp_path / "empty") == ["saved_model.pb"]


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("not a folder")
    for folder in (blocker, blocker / "vit_mae", blocker / "vit_mae" / "1"):
        with pytest.raises(NotADirectoryError, match=rf"{blocker}' is a file, not a folder"):
            check_folder_path(folder)
        with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
            atomic_write_text(folder / "config.json", "{}")
    check_folder_path(tmp_path / "new" / "deeper")  # missing folders are fine
    assert sorted(os.listdir(tmp_path)) == ["models"]


def test_commit_files_moves_all_files_or_finishes_later(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    old = {"weights": "old weights", "config": "old config", "stale.bin": "older"}
    for name, text in old.items():
        (folder / name).write_text(text)
    new = {"weights": "new weights", "config": "new config"}
    staged = stage(folder, new)
    replace, moves = os.replace, []

    def replace_then_die(src, dst):
        if os.path.dirname(src) == str(staged):
            if moves:
                raise Killed  # after the first file moved
            moves.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        commit_files(str(staged), str(folder), ["weights", "config"], remove=["stale.bin"])
    monkeypatch.setattr(os, "replace", replace)
    assert contents(folder) == {"weights": "new weights", "config": "old config"}  # mixed
    assert finish_commits(str(tmp_path)) == []  # another folder: untouched
    assert finish_commits(str(folder)) == [str(staged)]
    assert contents(folder) == new and not staged.exists()
    assert finish_commits(str(folder)) == []


def test_only_the_staging_folders_we_marked_are_removed_as_leftovers(tmp_path):
    """A killed write's staging folder (marked by `staging_dir`) is removed; a
    user's `.tmp-*` files and folders, and a planned commit, stay."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").write_text("old")
    staged = stage(folder, {"weights": "half-written"})  # not marked: not ours
    (folder / ".tmp-abc").write_text("the user's notes")
    (folder / ".tmp-keep").mkdir()
    (folder / ".tmp-keep" / "thesis.tex").write_text("the user's thesis")
    killed = folder / ".tmp-killed"  # what a kill inside staging_dir leaves
    killed.mkdir()
    (killed / STAGING_MARKER).touch()
    (killed / "weights").write_text("half-written")
    assert finish_commits(str(folder)) == [] and staged.exists() and killed.exists()
    assert remove_staging_leftovers(str(folder)) == [str(killed)]
    assert sorted(os.listdir(folder)) == [".tmp-abc", ".tmp-keep", ".tmp-save-1", "weights"]
    assert (folder / "weights").read_text() == "old"
    assert (folder / ".tmp-keep" / "thesis.tex").read_text() == "the user's thesis"
    with staging_dir(folder) as other:  # a commit that succeeds leaves no staging folder
        assert os.listdir(other) == [STAGING_MARKER]
        (tmp_path / "x").write_text("")
        os.replace(tmp_path / "x", os.path.join(other, "x"))
        assert commit_files(other, str(folder), ["x"]) == [str(folder / "x")]
    assert sorted(os.listdir(folder)) == [".tmp-abc", ".tmp-keep", ".tmp-save-1", "weights", "x"]


def tree(root):
    """Every entry under `root` (links not followed): what it is and holds."""
    found = {}
    for path, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(path, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                found[rel] = ("folder",)
            else:
                with open(full, "rb") as f:
                    found[rel] = ("file", f.read())
    return found


def plant(tmp_path, plan, staged_files=None, plan_text=None):
    """`tmp/outside/` (a victim file) beside `tmp/model/` (the checkpoint, with
    its own `.bashrc`) and `tmp/model/.tmp-save-x/` holding `plan`."""
    outside, folder = tmp_path / "outside", tmp_path / "model"
    outside.mkdir(parents=True)
    (outside / ".bashrc").write_text("the user's shell setup")
    (tmp_path / ".bashrc").write_text("the user's shell setup, above")
    folder.mkdir()
    (folder / "config.json").write_text("visible config")
    (folder / ".bashrc").write_text("the attacker's")
    staged = folder / ".tmp-save-x"
    staged.mkdir()
    for name, text in (staged_files or {}).items():
        (staged / name).write_text(text)
    (staged / COMMIT_PLAN).write_text(plan_text if plan_text is not None else json.dumps(plan))
    return outside, folder, staged


def ours(move, remove=()):
    return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "move": move, "remove": list(remove)}


@pytest.mark.parametrize(
    "plan",
    [
        {"move": ["../.bashrc"], "remove": []},  # the issue's: wrote over the folder above's
        ours({"../.bashrc": 14}),
        {"move": [], "remove": ["ABSOLUTE"]},  # deleted a file anywhere
        ours({}, remove=["ABSOLUTE"]),
        ours({}, remove=["../outside/.bashrc"]),
        ours({"sub/config.json": 1}),
        ours({}, remove=[".."]),
        ours({}, remove=[""]),
        ours({}, remove=["con\x00fig.json"]),
    ],
)
def test_a_plan_naming_anything_but_a_file_in_the_folder_is_refused_and_nothing_changes(
    tmp_path, plan
):
    plan = json.loads(json.dumps(plan).replace("ABSOLUTE", str(tmp_path / "outside" / ".bashrc")))
    outside, folder, _ = plant(tmp_path, plan, {".bashrc": "the attacker's"})
    before = tree(tmp_path)
    with pytest.raises(CommitPlanError, match=r"commit-plan\.json is not a plan this package"):
        finish_commits(str(folder))
    assert tree(tmp_path) == before


def test_a_plan_without_our_marker_or_with_other_sizes_is_not_ours(tmp_path):
    staged_files = {"config.json": "new config"}
    cases = {
        "no format": {"move": {"config.json": 10}, "remove": []},
        "version": {**ours({"config.json": 10}), "version": 2},
        "10 bytes, the plan records 11": ours({"config.json": 11}),
        "neither staged nor": ours({"weights": 3}),
        "not a number of bytes": ours({"config.json": "10"}),
        "not valid JSON": "{",
        "is a folder": ours({}, remove=[".tmp-save-x"]),
    }
    for i, (reason, plan) in enumerate(cases.items()):
        text = plan if isinstance(plan, str) else None
        outside, folder, _ = plant(tmp_path / str(i), plan, staged_files, plan_text=text)
        before = tree(tmp_path / str(i))
        with pytest.raises(CommitPlanError, match=reason):
            finish_commits(str(folder))
        assert tree(tmp_path / str(i)) == before
    # The same plan, written by commit_files, is ours and carried out.
    outside, folder, staged = plant(tmp_path / "ok", ours({"config.json": 10}), staged_files)
    assert finish_commits(str(folder)) == [str(staged)]
    assert (folder / "config.json").read_text() == "new config" and not staged.exists()


def test_links_in_a_plan_are_refused(tmp_path):
    """A staged file or a plan that is a link would move (or read) a file from
    outside the folder."""
    outside, folder, staged = plant(tmp_path, ours({"config.json": 22}))
    os.symlink(outside / ".bashrc", staged / "config.json")
    (tmp_path / "plan.json").write_text(json.dumps(ours({})))
    before = tree(outside)
    with pytest.raises(CommitPlanError, match="the staged 'config.json' is a link"):
        finish_commits(str(folder))
    (staged / COMMIT_PLAN).unlink()
    os.symlink(tmp_path / "plan.json", staged / COMMIT_PLAN)
    with pytest.raises(CommitPlanError, match="through a link"):
        finish_commits(str(folder))
    (staged / COMMIT_PLAN).unlink()
    os.symlink(staged, folder / ".tmp-save-y")  # a staging folder that is a link
    (staged / COMMIT_PLAN).write_text(json.dumps(ours({})))
    with pytest.raises(CommitPlanError, match="through a link"):
        finish_commits(str(folder), prefix=".tmp-save-y")
    assert tree(outside) == before


# Hostile pieces of a save plan: escapes, separators, NUL, links, huge and odd names.
HOSTILE_NAMES = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "../.bashrc",
            "../outside/.bashrc",
            "/ABS",
            "ABS",
            "a/b",
            "a\\b",
            "x\x00y",
            "n" * 300,
            "\ud800",
            "link",
            "config.json",
            "weights",
            COMMIT_PLAN,
            STAGING_MARKER,
            ".tmp-save-x",
        ]
    ),
    st.text(min_size=0, max_size=12),
    st.integers(),
    st.none(),
)


@st.composite
def hostile_plans(draw):
    """A plan (some of ours, most not), the staged files, and whether the sizes
    it records are the staged files' own."""
    safe = st.sampled_from(["config.json", "weights", "x"])
    names = st.one_of(safe, safe, safe, HOSTILE_NAMES)
    move = draw(st.lists(st.tuples(names, st.integers(-2, 30)), max_size=3))
    plan = {
        "format": draw(st.sampled_from([PLAN_FORMAT] * 4 + ["other-tool", None])),
        "version": draw(st.sampled_from([PLAN_VERSION] * 4 + [0, "1"])),
        "move": {str(k) if not isinstance(k, str) else k: v for k, v in move},
        "remove": draw(st.lists(names, max_size=3)),
    }
    if draw(st.integers(0, 4)) == 0:
        plan["move"] = list(plan["move"])  # the earlier, unmarked layout
    staged = {
        name: draw(st.binary(max_size=30))
        for name in ("config.json", "weights", "link", "x")
        if draw(st.integers(0, 4)) > 0
    }
    return plan, staged, draw(st.integers(0, 4)) > 0


@settings(max_examples=50, deadline=None)
@given(case=hostile_plans())
def test_property_no_plan_changes_anything_outside_its_folder(case):
    """Whatever a plan names, nothing outside the checkpoint folder changes; a
    refused plan changes nothing at all, and one carried out only moved plain
    names in and removed plain names from the folder."""
    plan, staged_files, true_sizes = case
    with tempfile.TemporaryDirectory() as root:
        root = os.path.realpath(root)
        text = json.dumps(plan, ensure_ascii=True).replace(
            "ABS", os.path.join(root, "outside", ".bashrc")
        )
        plan = json.loads(text)
        outside, folder = os.path.join(root, "outside"), os.path.join(root, "model")
        staged = os.path.join(folder, ".tmp-save-x")
        for path in (outside, folder, staged):
            os.makedirs(path)
        for where in (root, outside, folder):
            with open(os.path.join(where, ".bashrc"), "w") as f:
                f.write(f"{where}'s own")
        with open(os.path.join(folder, "weights"), "wb") as f:
            f.write(b"visible weights")
        for name, data in staged_files.items():
            if name == "link":
                os.symlink(os.path.join(outside, ".bashrc"), os.path.join(staged, name))
            else:
                with open(os.path.join(staged, name), "wb") as f:
                    f.write(data)
        if true_sizes and isinstance(plan["move"], dict):
            for name in plan["move"]:
                if name in staged_files and name != "link":
                    plan["move"][name] = len(staged_files[name])
        with open(os.path.join(staged, COMMIT_PLAN), "w") as f:
            json.dump(plan, f)
        outside_before = {k: v for k, v in tree(root).items() if not k.startswith("model")}
        folder_before = tree(folder)
        try:
            finish_commits(folder)
        except CommitPlanError as e:
            event("refused")
            assert COMMIT_PLAN in str(e)
            assert tree(folder) == folder_before
        else:
            event("carried out")
            # Carried out: the plan was ours and named only plain files of the folder.
            assert plan["format"] == PLAN_FORMAT and plan["version"] == PLAN_VERSION
            for name in [*plan["move"], *plan["remove"]]:
                assert "/" not in name and name not in ("", ".", "..") and "\x00" not in name
            for name in plan["move"]:  # staged, or moved in already by an earlier try
                moved = ("file", staged_files[name]) if name in staged_files else None
                assert tree(folder)[name] == (moved or folder_before[name])
            assert not os.path.exists(staged)
        assert {k: v for k, v in tree(root).items() if not k.startswith("model")} == outside_before


def test_a_published_folder_has_a_new_folders_mode_not_a_private_one(tmp_path):
    """Exports and backups are staged in mkdtemp's private (0700) folders; once
    published, a server running as another user must be able to read them."""
    old = os.umask(0o022)
    try:
        with staging_dir(tmp_path) as staged:
            assert os.stat(staged).st_mode & 0o777 == 0o700
            (tmp_path / "expected").mkdir()  # what mkdir gives under this umask
            target = publish_dir(staged, tmp_path / "published")
    finally:
        os.umask(old)
    assert os.stat(target).st_mode & 0o777 == os.stat(tmp_path / "expected").st_mode & 0o777
    assert os.stat(target).st_mode & 0o777 == 0o755
    assert os.listdir(target) == []  # the staging marker is not published


@pytest.fixture
def nfs_locks(monkeypatch):
    """`flock` as on NFS, which emulates it with POSIX locks: an exclusive lock
    on a descriptor not open for writing (a folder's) fails with EBADF."""
    import errno
    import fcntl

    real = fcntl.flock

    def flock(fd, operation):
        read_only = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        if operation & fcntl.LOCK_EX and read_only:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)


def test_staging_folders_are_locked_and_told_apart_on_nfs(tmp_path, nfs_locks):
    """Every staged write failed with EBADF where the folder itself was locked."""
    killed = tmp_path / ".tmp-killed"
    killed.mkdir()
    (killed / STAGING_MARKER).touch()
    with staging_dir(tmp_path) as live:
        assert os.listdir(live) == [STAGING_MARKER]
        assert remove_staging_leftovers(str(tmp_path)) == [str(killed)]  # the live one stays
        assert os.path.isdir(live)
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_saves_and_loads_on_nfs_with_one_warning(tmp_path, nfs_locks):
    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.utils import files

    from ..helpers import tiny_config

    model = TFViTMAEForPreTraining(tiny_config())
    with pytest.warns(UserWarning, match="Cannot lock the folder .* not kept apart") as warned:
        model.save_pretrained(tmp_path)
        model.save_pretrained(tmp_path)  # the same folder: not warned again
    assert len([w for w in warned if "Cannot lock" in str(w.message)]) == 1
    files._UNLOCKABLE.clear()
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path)  # a shared lock works there
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert (a == b).all()
